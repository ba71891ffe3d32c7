"""End-to-end fine-tuning on tiny checkpoints: saved folder loads everywhere, resume, gradient cache, LoRA."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import tiny_models

from flagembed.train import DataArguments, EmbedderTrainingArguments, ModelArguments, finetune_embedder


def _train_file(path: Path, n: int = 16, kd: bool = False) -> Path:
    rng = random.Random(0)
    words = tiny_models.WORDS

    def text(k: int) -> str:
        return " ".join(rng.choice(words) for _ in range(k))

    with open(path, "w", encoding="utf-8") as f:
        for _ in range(n):
            row = {"query": text(4), "pos": [text(12)], "neg": [text(12) for _ in range(4)]}
            if kd:
                row |= {"pos_scores": [rng.random() * 5], "neg_scores": [rng.random() for _ in range(4)]}
            f.write(json.dumps(row) + "\n")
    return path


def _args(out: Path, **kw: object) -> EmbedderTrainingArguments:
    base = dict(
        output_dir=str(out),
        per_device_train_batch_size=4,
        learning_rate=1e-3,
        logging_steps=1,
        report_to="none",
        use_cpu=True,
        seed=11,
        save_strategy="no",
        dataloader_drop_last=True,
        disable_tqdm=True,
    )
    base.update(kw)
    return EmbedderTrainingArguments(**base)  # type: ignore[arg-type]


def _no_dropout_copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    cfg = json.loads((dst / "config.json").read_text())
    cfg.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst


def test_saved_model_loads_in_flagembed_and_sentence_transformers(tiny_bert: Path, tmp_path: Path):
    from sentence_transformers import SentenceTransformer

    from flagembed.inference import Embedder

    data = _train_file(tmp_path / "train.jsonl", kd=True)
    out = tmp_path / "out"
    result = finetune_embedder(
        ModelArguments(model_name_or_path=str(tiny_bert)),
        DataArguments(train_data=[str(data)], train_group_size=3, knowledge_distillation=True, passage_max_len=24),
        _args(out, max_steps=3, sentence_pooling_method="mean", temperature=0.05),
    )
    assert result.global_step == 3 and len(result.loss_history) == 3
    assert (out / "loss.png").stat().st_size > 1000 and (out / "loss_history.json").is_file()
    texts = ["what is a cell", "the gene and the protein", "blood virus drug therapy study"]
    tuned = Embedder(str(out), device="cpu").encode(texts)
    base = Embedder(str(tiny_bert), device="cpu", pooling="mean").encode(texts)
    assert not np.allclose(tuned, base, atol=1e-4)  # training changed the weights
    st = SentenceTransformer(str(out), device="cpu").encode(texts, convert_to_numpy=True)
    np.testing.assert_allclose(tuned, st, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(st, axis=1), 1.0, atol=1e-5)  # Normalize module written


@pytest.mark.slow
def test_resume_reproduces_the_uninterrupted_losses(tiny_bert: Path, tmp_path: Path):
    data = _train_file(tmp_path / "train.jsonl", n=24)
    model = ModelArguments(model_name_or_path=str(tiny_bert))
    data_args = DataArguments(train_data=[str(data)], train_group_size=3, passage_max_len=24)
    full = finetune_embedder(model, data_args, _args(tmp_path / "a", max_steps=8, save_strategy="steps", save_steps=4))
    # interrupted run: only its checkpoint-4 survives, then training resumes from it
    resumed_dir = tmp_path / "b"
    resumed_dir.mkdir()
    shutil.copytree(tmp_path / "a" / "checkpoint-4", resumed_dir / "checkpoint-4")
    resumed = finetune_embedder(
        model,
        data_args,
        _args(resumed_dir, max_steps=8, save_strategy="steps", save_steps=4),
        resume_from_checkpoint=str(resumed_dir / "checkpoint-4"),
    )
    want = [h["loss"] for h in full.loss_history if h["step"] > 4]
    got = [h["loss"] for h in resumed.loss_history]
    assert len(want) == 4 and got == pytest.approx(want, rel=1e-5)


def test_gradient_cache_and_checkpointing_match_full_batch(tiny_bert: Path, tmp_path: Path):
    path = _no_dropout_copy(tiny_bert, tmp_path / "bert-nodrop")
    data = _train_file(tmp_path / "train.jsonl")
    model = ModelArguments(model_name_or_path=str(path))
    data_args = DataArguments(train_data=[str(data)], train_group_size=3, passage_max_len=24)
    plain = finetune_embedder(model, data_args, _args(tmp_path / "a", max_steps=3))
    cached = finetune_embedder(model, data_args, _args(tmp_path / "b", max_steps=3, sub_batch_size=3))
    want = [h["loss"] for h in plain.loss_history]
    assert [h["loss"] for h in cached.loss_history] == pytest.approx(want, rel=1e-4)
    ckpt = finetune_embedder(model, data_args, _args(tmp_path / "c", max_steps=3, gradient_checkpointing=True))
    assert [h["loss"] for h in ckpt.loss_history] == pytest.approx(want, rel=1e-4)


def test_same_dataset_batches_and_matryoshka_train(tiny_bert: Path, tmp_path: Path):
    folder = tmp_path / "data"
    folder.mkdir()
    _train_file(folder / "a.jsonl", n=8)
    _train_file(folder / "b_no_in_batch_neg.jsonl", n=8)
    result = finetune_embedder(
        ModelArguments(model_name_or_path=str(tiny_bert)),
        DataArguments(train_data=[str(folder)], train_group_size=2, same_dataset_within_batch=True),
        _args(tmp_path / "out", num_train_epochs=1, per_device_train_batch_size=4, use_mrl=True, mrl_dims=[8, 32]),
    )
    assert result.global_step == 4  # 2 files x 2 batches of 4, each batch from one file
    assert all(np.isfinite(h["loss"]) for h in result.loss_history)


@pytest.mark.slow
def test_lora_on_a_decoder_saves_adapter_and_merged_model(tiny_qwen2: Path, tmp_path: Path):
    pytest.importorskip("peft")
    from flagembed.inference import Embedder

    data = _train_file(tmp_path / "train.jsonl", n=8)
    out = tmp_path / "lora"
    result = finetune_embedder(
        ModelArguments(model_name_or_path=str(tiny_qwen2), use_lora=True, lora_rank=4, lora_alpha=8),
        DataArguments(train_data=[str(data)], train_group_size=2, passage_max_len=24),
        _args(out, max_steps=2, sentence_pooling_method="last_token", learning_rate=5e-2),
    )
    assert (out / "adapter_config.json").is_file()
    assert result.merged_dir is not None
    texts = ["the cell", "a gene and a protein"]
    merged = Embedder(result.merged_dir, device="cpu").encode(texts)
    base = Embedder(str(tiny_qwen2), device="cpu", pooling="last_token").encode(texts)
    assert merged.shape == base.shape and not np.allclose(merged, base, atol=1e-4)


def test_saved_model_keeps_the_base_models_max_length(tiny_bert: Path, tmp_path: Path):
    from flagembed.inference import Embedder

    base = tiny_models.add_st_config(_no_dropout_copy(tiny_bert, tmp_path / "base"), "mean", True, max_seq_length=100)
    data = _train_file(tmp_path / "train.jsonl", n=8)
    out = tmp_path / "out"
    finetune_embedder(
        ModelArguments(model_name_or_path=str(base)),
        DataArguments(train_data=[str(data)], train_group_size=2, query_max_len=8, passage_max_len=24),
        _args(out, max_steps=1),
    )
    assert json.loads((out / "sentence_bert_config.json").read_text())["max_seq_length"] == 100
    assert Embedder(str(out), device="cpu").max_length == 100
    # no sentence-transformers config: the tokenizer's / position table's limit (128 here), not passage_max_len
    plain = tmp_path / "plain"
    finetune_embedder(
        ModelArguments(model_name_or_path=str(tiny_bert)),
        DataArguments(train_data=[str(data)], train_group_size=2, passage_max_len=24),
        _args(plain, max_steps=1),
    )
    assert json.loads((plain / "sentence_bert_config.json").read_text())["max_seq_length"] == 128


def test_foreign_output_dir_is_refused_before_loading_the_model(tiny_bert: Path, tmp_path: Path):
    data = _train_file(tmp_path / "train.jsonl", n=8)
    other = tiny_models.build_bert(tmp_path / "other-model", seed=5)
    (other / "checkpoint-7").mkdir()
    before = (other / "model.safetensors").read_bytes()
    data_args = DataArguments(train_data=[str(data)], train_group_size=2, passage_max_len=24)
    missing = ModelArguments(model_name_or_path=str(tmp_path / "no-such-model"))
    with pytest.raises(ValueError, match="is not empty.*--overwrite_output_dir"):
        finetune_embedder(missing, data_args, _args(other, max_steps=1))  # the model is never looked up
    assert (other / "model.safetensors").read_bytes() == before
    model = ModelArguments(model_name_or_path=str(tiny_bert))
    done = finetune_embedder(model, data_args, _args(other, max_steps=1, overwrite_output_dir=True))
    assert done.global_step == 1 and not (other / "checkpoint-7").exists()
    # the same run again into its own folder is fine; another model's run there is not
    assert finetune_embedder(model, data_args, _args(other, max_steps=1)).global_step == 1
    with pytest.raises(ValueError, match="holds a run of"):
        other_model = ModelArguments(model_name_or_path=str(other))
        finetune_embedder(other_model, data_args, _args(other, max_steps=1), resume_from_checkpoint=True)
    with pytest.raises(ValueError, match="not a folder"):
        finetune_embedder(model, data_args, _args(data, max_steps=1))


def test_final_loss_without_a_logging_step(tiny_bert: Path, tmp_path: Path):
    data = _train_file(tmp_path / "train.jsonl", n=8)
    result = finetune_embedder(
        ModelArguments(model_name_or_path=str(tiny_bert)),
        DataArguments(train_data=[str(data)], train_group_size=2, passage_max_len=24),
        _args(tmp_path / "out", max_steps=2, logging_steps=500),
    )
    assert result.loss_history == [] and result.final_loss == result.train_loss


@pytest.mark.slow
def test_fine_tuned_minilm_keeps_256_tokens(minilm_path: Path, tmp_path: Path):
    from flagembed.inference import Embedder

    data = _train_file(tmp_path / "train.jsonl", n=4)
    out = tmp_path / "minilm-ft"
    finetune_embedder(
        ModelArguments(model_name_or_path=str(minilm_path)),
        DataArguments(train_data=[str(data)], train_group_size=2, query_max_len=16, passage_max_len=64),
        _args(out, max_steps=1, per_device_train_batch_size=2),
    )
    base, tuned = Embedder(str(minilm_path), device="cpu"), Embedder(str(out), device="cpu")
    assert base.max_length == 256 and tuned.max_length == 256
    long_text = " ".join(["the protein of the cell was found in blood"] * 20)  # ~200 tokens: past 64, under 256
    tuned.encode([long_text])
    assert tuned.last_truncated == 0
