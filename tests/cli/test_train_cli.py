"""``flagembed finetune embedder``, ``flagembed mine`` and ``flagembed score`` through typer's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tiny_models
from typer.testing import CliRunner

from flagembed.cli import app

runner = CliRunner()


def _data(path: Path, n: int = 8) -> Path:
    words = tiny_models.WORDS
    rows = []
    for i in range(n):
        pick = [words[(i * 7 + k * 3) % len(words)] for k in range(10)]
        rows.append(
            {"query": " ".join(pick[:3]), "pos": [" ".join(pick)], "neg": [" ".join(pick[k:]) for k in (2, 4, 6)]}
        )
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_finetune_embedder_with_reference_arguments(tiny_bert: Path, tmp_path: Path):
    data = _data(tmp_path / "train.jsonl")
    out = tmp_path / "model"
    args = [
        "finetune",
        "embedder",
        "--model",
        str(tiny_bert),
        "--train-data",
        str(data),
        "--output",
        str(out),
        "--train_group_size",
        "2",
        "--max_steps",
        "2",
        "--per_device_train_batch_size",
        "4",
        "--temperature",
        "0.05",
        "--use_cpu",
        "--report_to",
        "none",
        "--save_strategy",
        "no",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "trained 2 steps" in result.output
    assert (out / "model.safetensors").is_file() and (out / "modules.json").is_file()


def test_finetune_reports_bad_arguments_and_data(tiny_bert: Path, tmp_path: Path):
    data = _data(tmp_path / "train.jsonl")
    base = ["finetune", "embedder", "--model", str(tiny_bert), "--output", str(tmp_path / "o"), "--use_cpu"]
    bad = runner.invoke(app, [*base, "--train-data", str(data), "--bogus_option", "1"])
    assert bad.exit_code == 2 and "unknown arguments: --bogus_option 1" in bad.output
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"query": "q", "pos": "not a list", "neg": []}\n', encoding="utf-8")
    res = runner.invoke(app, [*base, "--train-data", str(broken)])
    assert res.exit_code == 2 and f"{broken}:1" in res.output


def test_mine_writes_negatives_without_positives(tiny_bert: Path, tmp_path: Path):
    data = _data(tmp_path / "train.jsonl")
    out = tmp_path / "mined.jsonl"
    res = runner.invoke(
        app,
        [
            "mine",
            "--model",
            str(tiny_bert),
            "--input",
            str(data),
            "--output",
            str(out),
            "--range-for-sampling",
            "0-10",
            "--negative-number",
            "3",
            "--device",
            "cpu",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "dropped_positives" in res.output
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == 8
    for row in rows:
        assert len(row["neg"]) == 3 and row["pos"][0] not in row["neg"]


def test_score_adds_teacher_scores_equal_to_the_cross_encoder(tmp_path: Path):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    reranker = tiny_models.build_bert(tmp_path / "rr", classifier=True)
    data = _data(tmp_path / "train.jsonl", n=3)
    out = tmp_path / "scored.jsonl"
    res = runner.invoke(
        app, ["score", "--reranker", str(reranker), "--input", str(data), "--output", str(out), "--device", "cpu"]
    )
    assert res.exit_code == 0, res.output
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    tok = AutoTokenizer.from_pretrained(str(reranker))
    model = AutoModelForSequenceClassification.from_pretrained(str(reranker)).eval()
    for row in rows:
        texts = row["pos"] + row["neg"]
        with torch.no_grad():
            enc = tok([row["query"]] * len(texts), texts, return_tensors="pt", padding=True, truncation=True)
            want = model(**enc).logits.view(-1).tolist()
        assert row["pos_scores"] + row["neg_scores"] == pytest.approx(want, abs=1e-4)


@pytest.mark.slow
def test_finetune_under_torchrun_with_cross_device_negatives_and_gradient_cache(tiny_bert: Path, tmp_path: Path):
    import os
    import shutil
    import subprocess
    import sys

    exe = Path(sys.executable).parent
    torchrun, cli = shutil.which("torchrun", path=str(exe)), shutil.which("flagembed", path=str(exe))
    if torchrun is None or cli is None:
        pytest.skip("torchrun or the flagembed console script is not installed")
    data = _data(tmp_path / "train.jsonl")
    out = tmp_path / "ddp"
    options = (
        "finetune embedder --train_group_size 2 --max_steps 2 --per_device_train_batch_size 2 "
        "--negatives_cross_device --sub_batch_size 1 --use_cpu --report_to none --save_strategy no --logging_steps 1"
    ).split()
    cmd = [torchrun, "--standalone", "--nproc_per_node", "2", "--no-python", cli, *options]
    cmd += ["--model", str(tiny_bert), "--train-data", str(data), "--output", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("trained 2 steps") == 1  # reported once, by rank 0
    assert (out / "model.safetensors").is_file() and (out / "loss_history.json").is_file()


def test_finetune_without_arguments_prints_a_short_usage():
    res = runner.invoke(app, ["finetune", "embedder"])
    assert res.exit_code == 2
    assert "usage: flagembed finetune embedder --model" in res.output and "--help" in res.output
    assert len(res.output.splitlines()) <= 4
    missing = runner.invoke(app, ["finetune", "embedder", "--train-data", "x.jsonl"])
    assert missing.exit_code == 2 and "required" in missing.output and len(missing.output.splitlines()) <= 4


def test_score_refuses_an_embedder_as_teacher(tiny_bert: Path, tmp_path: Path):
    data = _data(tmp_path / "train.jsonl", n=2)
    out = tmp_path / "scored.jsonl"
    res = runner.invoke(
        app, ["score", "--reranker", str(tiny_bert), "--input", str(data), "--output", str(out), "--device", "cpu"]
    )
    assert res.exit_code == 2 and "no trained classification head" in res.output and not out.exists()


def test_mine_and_score_check_the_output_before_loading_a_model(tmp_path):
    from typer.testing import CliRunner

    from flagembed.cli import app

    data = tmp_path / "train.jsonl"
    data.write_text('{"query": "q", "pos": ["p"], "neg": ["n"]}\n')
    for cmd in (["mine", "-m", "nope/nope"], ["score", "-r", "nope/nope"]):
        res = CliRunner().invoke(app, [*cmd, "-i", str(data), "--out", str(tmp_path)])
        assert res.exit_code == 2 and f"cannot write {tmp_path}: is a directory" in res.output, res.output
