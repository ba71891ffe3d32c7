"""Decoder-only embedder fine-tuning: EOS and padding, ICL in-batch examples, LoRA/full training that loads back."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import tiny_models
import torch
from tiny_decoders import build_llm_embedder, llm_tokenizer

from flagembed.train import DataArguments, EmbedderTrainingArguments, ModelArguments, build_trainer
from flagembed.train.decoder import icl_queries, is_decoder_only, prepare_decoder_tokenizer


def test_decoder_detection(tiny_bert, tiny_qwen2):
    from transformers import AutoConfig

    assert is_decoder_only(AutoConfig.from_pretrained(tiny_qwen2))
    assert not is_decoder_only(AutoConfig.from_pretrained(tiny_bert))


def test_tokenizer_adds_eos_pads_left_and_keeps_it_when_saved(tmp_path):
    from transformers import AutoTokenizer

    tok = llm_tokenizer("qwen2", padding_side="right")
    assert tok("the cell")["input_ids"][-1] != tok.eos_token_id
    assert prepare_decoder_tokenizer(tok)
    ids = tok("the cell")["input_ids"]
    assert ids[-1] == tok.eos_token_id and ids[:-1] == tok("the cell", add_special_tokens=False)["input_ids"]
    assert tok.padding_side == "left"
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert again("the cell")["input_ids"] == ids
    mistral = llm_tokenizer("mistral")  # already <s> ... </s>: unchanged
    before = mistral("the cell")["input_ids"]
    assert prepare_decoder_tokenizer(mistral) and mistral("the cell")["input_ids"] == before


def test_icl_examples_come_from_the_batch_within_the_budget():
    tok = llm_tokenizer("qwen2")  # byte-level: decoding gives the text back
    queries = [f"what is the {w}" for w in ("gene", "cell", "virus", "drug", "brain", "blood")]
    positives = [f"the {w} is data" for w in ("gene", "cell", "virus", "drug", "brain", "blood")]
    kw = dict(query_max_len=160, example_query_max_len=8, example_passage_max_len=8, query_reserve=32)
    out = icl_queries(queries, positives, tok, np.random.default_rng(3), **kw)
    assert len(out) == 6 and all(q.endswith("\n<response>") for q in out)
    with_examples = 0
    for i, q in enumerate(out):
        pieces = q.split("\n\n")
        examples, own = pieces[:-1], pieces[-1]
        assert own == queries[i] + "\n<response>"
        assert all(positives[i] not in e for e in examples)  # never the query's own pair
        assert len(examples) <= 5
        assert len(tok("\n\n".join(examples) + "\n\n", add_special_tokens=False)["input_ids"]) <= 160 - 32
        with_examples += bool(examples)
    assert with_examples > 0
    # the reference's budget: query_max_len - 512 leaves no room at query_max_len=512 (issue #1158)
    kw.update(query_max_len=512, query_reserve=512)
    bare = icl_queries(queries, positives, tok, np.random.default_rng(3), **kw)
    assert bare == [q + "\n<response>" for q in queries]


def _train_file(path: Path, n: int = 16) -> Path:
    rng = random.Random(0)

    def text(k: int) -> str:
        return " ".join(rng.choice(tiny_models.WORDS) for _ in range(k))

    with open(path, "w", encoding="utf-8") as f:
        for _ in range(n):
            f.write(json.dumps({"query": text(4), "pos": [text(10)], "neg": [text(10) for _ in range(3)]}) + "\n")
    return path


def _args(out: Path, **kw: object) -> EmbedderTrainingArguments:
    base = dict(
        output_dir=str(out), per_device_train_batch_size=4, learning_rate=2e-2, logging_steps=1, report_to="none",
        use_cpu=True, seed=11, save_strategy="no", disable_tqdm=True, max_steps=8, loss_plot=False,
    )  # fmt: skip
    base.update(kw)
    return EmbedderTrainingArguments(**base)  # type: ignore[arg-type]


def _trained_embeddings(trainer, tokenizer, texts: list[str]) -> np.ndarray:
    model = trainer.model.eval()
    out = []
    with torch.no_grad():
        for t in texts:
            ids = torch.tensor([tokenizer(t)["input_ids"]])
            h = model(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state[0, -1]
            out.append(torch.nn.functional.normalize(h.float(), dim=-1).numpy())
    return np.stack(out)


@pytest.mark.slow
@pytest.mark.parametrize("lora", [True, False])
def test_decoder_training_loss_falls_and_the_model_loads_back(tmp_path, lora):
    pytest.importorskip("peft")
    from flagembed import Embedder, FlagLLMModel

    base = build_llm_embedder(tmp_path / "base", "qwen2", padding_side="right")
    data = _train_file(tmp_path / "train.jsonl")
    out = tmp_path / "out"
    model_args = ModelArguments(model_name_or_path=str(base), lora_rank=8, lora_alpha=16, lora_dropout=0.0)
    if not lora:
        model_args.use_lora = False
    data_args = DataArguments(
        train_data=[str(data)], train_group_size=2, query_max_len=96, passage_max_len=24,
        same_dataset_within_batch=True, retrieval_use_examples=True, icl_query_reserve=24,
        example_query_max_len=8, example_passage_max_len=8,
    )  # fmt: skip
    trainer = build_trainer(model_args, data_args, _args(out, learning_rate=2e-2 if lora else 2e-3))
    assert model_args.use_lora is lora  # LoRA is the default for decoder-only models
    assert trainer.encoder.pooling == "last_token" and trainer.processing_class.padding_side == "left"
    batch = trainer.data_collator([trainer.train_dataset[0]])
    assert (batch["passages"]["input_ids"][:, -1] == trainer.processing_class.eos_token_id).all()  # EOS, left pad
    prompts = [trainer.processing_class.decode(r, skip_special_tokens=True) for r in batch["queries"]["input_ids"]]
    assert all(p.endswith("\n<response>") for p in prompts) and any("\n\n" in p for p in prompts)  # ICL examples
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert np.mean(losses[-3:]) < np.mean(losses[:3])
    trainer.save_model()
    tok = trainer.processing_class
    texts = ["the cell and a gene", "what is the virus"]
    expected = _trained_embeddings(trainer, tok, texts)
    if lora:
        assert (out / "adapter_config.json").is_file()
        folder = out / "merged"
        merged = trainer.model.merge_and_unload()
        merged.save_pretrained(folder)
        tok.save_pretrained(folder)
    else:
        folder = out
    for model in (Embedder(folder, device="cpu", pooling="last_token"), FlagLLMModel(folder, devices="cpu")):
        np.testing.assert_allclose(model.encode(texts), expected, atol=1e-5)


def test_use_lora_is_decided_by_the_model_kind_unless_given():
    from flagembed.train import parse_finetune_args

    base = ["--model_name_or_path", "x", "--train_data", "a.jsonl", "--output_dir", "o"]
    assert parse_finetune_args(base)[0].use_lora is None
    assert parse_finetune_args(["--use_lora", *base])[0].use_lora is True
    assert parse_finetune_args([*base, "--use_lora"])[0].use_lora is True
    assert parse_finetune_args(["--use_lora", "False", *base])[0].use_lora is False
