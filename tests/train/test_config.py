"""Reference-style arguments parse into the config dataclasses; bad values fail clearly."""

from __future__ import annotations

import pytest

from flagembed.train import parse_finetune_args


def test_reference_command_line_parses(tmp_path):
    m, d, t = parse_finetune_args(
        [
            "--model_name_or_path",
            "BAAI/bge-base-en-v1.5",
            "--train_data",
            "a.jsonl",
            "b/",
            "--output_dir",
            str(tmp_path),
            "--train_group_size",
            "4",
            "--query_max_len",
            "64",
            "--temperature",
            "0.05",
            "--negatives_cross_device",
            "--kd_loss_type",
            "m3_kd_loss",
            "--use_mrl",
            "--mrl_dims",
            "64",
            "128",
            "--learning_rate",
            "1e-5",
            "--query_instruction_for_retrieval",
            "Q: ",
            "--use_lora",
            "--lora_rank",
            "8",
        ]
    )
    assert m.model_name_or_path == "BAAI/bge-base-en-v1.5" and m.use_lora and m.lora_rank == 8
    assert d.train_data == ["a.jsonl", "b/"] and d.train_group_size == 4 and d.query_max_len == 64
    assert d.query_instruction_for_retrieval == "Q: " and d.passage_max_len == 128  # reference default
    assert t.temperature == 0.05 and t.negatives_cross_device and t.kd_loss_type == "m3_kd_loss"
    assert t.mrl_dims == [64, 128] and t.learning_rate == 1e-5 and t.remove_unused_columns is False


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--kd_loss_type", "mse"], "kd_loss_type"),
        (["--temperature", "0"], "temperature"),
        (["--sentence_pooling_method", "max"], "sentence_pooling_method"),
        (["--use_mrl"], "mrl_dims"),
        (["--train_group_size", "0"], "train_group_size"),
        (["--bogus", "1"], "unknown arguments"),
    ],
)
def test_bad_values_are_rejected(tmp_path, extra, match):
    base = ["--model_name_or_path", "m", "--train_data", "x.jsonl", "--output_dir", str(tmp_path)]
    with pytest.raises(ValueError, match=match):
        parse_finetune_args(base + extra)


def test_train_data_is_required(tmp_path):
    with pytest.raises(ValueError, match="train_data"):
        parse_finetune_args(["--model_name_or_path", "m", "--output_dir", str(tmp_path)])
