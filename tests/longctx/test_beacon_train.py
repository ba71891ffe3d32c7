"""Beacon training on the HF Trainer: beacon params only, chat labels, resume, evaluation, CLI."""

from __future__ import annotations

import json

import pytest
import torch
from beacon_tiny import tiny_lm

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _tokenizer(path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<pad>", "<s>", "</s>", "<unk>", "<|im_start|>", "<|im_end|>", "\n"]
    words += [f"w{i}" for i in range(200)] + ["user", "assistant", "system", "hi", "ok"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(" ", behavior="removed"), pre_tokenizers.Split("\n", behavior="isolated")]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )
    fast.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(path)
    return fast


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("beacon_base")
    tiny_lm("llama").save_pretrained(path)
    _tokenizer(path)
    return path


def _data(path, n_rows=3, n_words=40):
    rows = [{"text": " ".join(f"w{(i * 7 + j) % 200}" for j in range(n_words))} for i in range(n_rows)]
    path.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    return path


def test_chat_labels_on_assistant_turns_only(tiny_dir):
    from transformers import AutoTokenizer

    from flagembed.longctx.beacon.data import chat_row

    tok = AutoTokenizer.from_pretrained(tiny_dir)
    row = chat_row(
        tok,
        [
            {"role": "user", "content": "w1 w2"},
            {"role": "assistant", "content": "w3 w4"},
            {"role": "user", "content": "w5"},
            {"role": "assistant", "content": "ok"},
        ],
    )
    ids, labels = row["input_ids"], row["labels"]
    text = tok.apply_chat_template(
        [
            {"role": "user", "content": "w1 w2"},
            {"role": "assistant", "content": "w3 w4"},
            {"role": "user", "content": "w5"},
            {"role": "assistant", "content": "ok"},
        ],
        tokenize=False,
    )
    assert ids == tok(text, add_special_tokens=False)["input_ids"]
    labelled = tok.convert_ids_to_tokens([i for i, lab in zip(ids, labels) if lab != -100])
    assert labelled == ["w3", "w4", "<|im_end|>", "\n", "ok", "<|im_end|>", "\n"]


@pytest.mark.slow
def test_train_resume_and_cli(tiny_dir, tmp_path):
    from flagembed.longctx.beacon import load_beacon_model
    from flagembed.longctx.beacon.train import BeaconTrainConfig, train_beacon

    data = _data(tmp_path / "train.jsonl")
    cfg = BeaconTrainConfig(
        model=str(tiny_dir),
        train_data=[str(data)],
        output_dir=str(tmp_path / "out"),
        window=8,
        ratio=(2, 4),
        max_steps=3,
        save_steps=2,
        learning_rate=1e-2,
        gradient_checkpointing=True,
        logging_steps=1,
        eval_data=[str(data)],
    )
    result = train_beacon(cfg)
    assert result.global_step == 3
    trained = load_beacon_model(tmp_path / "out")
    base = load_beacon_model(tiny_dir, window=8, ratio=(2, 4))
    for (n1, p1), (n2, p2) in zip(trained.model.named_parameters(), base.model.named_parameters()):
        assert n1 == n2
        changed = not torch.equal(p1, p2)
        assert changed == ("beacon_" in n1 and "layers.1.self_attn.beacon_q" not in n1), n1
    # resume from the step-2 checkpoint reaches the same weights as the uninterrupted run
    cfg2 = BeaconTrainConfig(**{**cfg.__dict__, "output_dir": str(tmp_path / "out")})
    train_beacon(cfg2, resume_from_checkpoint=str(tmp_path / "out" / "checkpoint-2"))
    again = load_beacon_model(tmp_path / "out")
    w1 = trained.model.model.beacon_embed_tokens.weight
    torch.testing.assert_close(again.model.model.beacon_embed_tokens.weight, w1, atol=1e-6, rtol=1e-5)

    from typer.testing import CliRunner

    from flagembed.cli import app

    res = CliRunner().invoke(
        app,
        [
            "beacon",
            "train",
            "--model",
            str(tiny_dir),
            "--train-data",
            str(data),
            "--output",
            str(tmp_path / "cli"),
            "--window",
            "8",
            "--ratio",
            "4",
            "--max-steps",
            "1",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "trained 1 steps" in res.output
    short = _data(tmp_path / "short.jsonl", n_words=5)
    res = CliRunner().invoke(
        app,
        [
            "beacon",
            "train",
            "--model",
            str(tiny_dir),
            "--train-data",
            str(short),
            "--output",
            str(tmp_path / "cli2"),
            "--window",
            "8",
            "--ratio",
            "4",
            "--max-steps",
            "1",
        ],
    )
    assert res.exit_code == 2 and "min_length" in res.output
