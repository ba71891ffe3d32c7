"""``flagembed merge`` through typer's CliRunner on tiny models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tiny_models
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from flagembed.cli import app
from flagembed.cli.merge import expand_variadic

runner = CliRunner()


@pytest.fixture(scope="module")
def berts(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("berts")
    return [tiny_models.build_bert(root / f"b{i}", seed=i) for i in range(3)]


def _expected(paths: list[Path], weights: list[float]) -> dict[str, torch.Tensor]:
    states = [load_file(str(p / "model.safetensors")) for p in paths]
    return {k: sum(w * s[k].double() for w, s in zip(weights, states)) for k in states[0]}


def _check(out: Path, paths: list[Path], weights: list[float]) -> None:
    got = load_file(str(out / "model.safetensors"))
    for k, v in _expected(paths, weights).items():
        torch.testing.assert_close(got[k].double(), v, rtol=0, atol=1e-6)


def test_expand_variadic():
    args = ["--models", "a", "b", "--weights", "1.5", "-0.5", "-t", "encoder", "--out", "o"]
    assert expand_variadic(args) == [
        "--models", "a", "--models", "b", "--weights", "1.5", "--weights", "-0.5", "-t", "encoder", "--out", "o",
    ]  # fmt: skip


@pytest.mark.parametrize("by_layers", [False, True])
def test_merge_by_weights(berts, tmp_path, by_layers):
    args = ["merge", "--models", *map(str, berts), "--weights", "0.5", "0.3", "0.2", "--type", "encoder"]
    args += ["--out", str(tmp_path / "m")] + (["--by-layers"] if by_layers else [])
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "wrote" in res.output and "0.3000" in res.output
    _check(tmp_path / "m", berts, [0.5, 0.3, 0.2])


def test_negative_weights_on_the_command_line(berts, tmp_path):
    base = ["merge", "-m", str(berts[0]), str(berts[1]), "-w", "1.5", "-0.5", "-o", str(tmp_path / "m")]
    res = runner.invoke(app, base)
    assert res.exit_code == 2 and "weight 1 is -0.5" in res.output and "--allow-negative" in res.output
    assert "allow_negative=True" not in res.output  # CLI errors name CLI flags
    assert not (tmp_path / "m").exists()
    res = runner.invoke(app, [*base, "--allow-negative"])
    assert res.exit_code == 0, res.output
    _check(tmp_path / "m", berts[:2], [1.5, -0.5])


def test_merge_by_examples(berts, tmp_path):
    examples = tmp_path / "ex.jsonl"
    rows = [
        {"query": "what is the cell", "pos": ["cells protein gene"], "neg": ["water fire", "city country"]},
        {"query": "hiv drug therapy", "pos": ["virus drug clinical"], "neg": ["dark light", "fast slow"]},
    ]
    examples.write_text("\n".join(json.dumps(r) for r in rows))
    res = runner.invoke(
        app,
        ["merge", "--models", *map(str, berts), "--examples", str(examples), "--neg-number", "2",
         "--temperature", "0.01", "--out", str(tmp_path / "m"), "--device", "cpu"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    lines = [line.split() for line in res.output.splitlines() if line.startswith(str(berts[0].parent))]
    weights = [float(parts[1]) for parts in lines]
    assert len(weights) == 3 and sum(weights) == pytest.approx(1, abs=2e-4)
    assert all(float(parts[2]) > 0 for parts in lines)  # losses shown


def test_a_non_empty_output_is_refused_with_the_flag_name(berts, tmp_path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "mine.txt").write_text("x")
    res = runner.invoke(app, ["merge", "-m", str(berts[0]), str(berts[1]), "-w", "0.5", "0.5", "--output", str(out)])
    assert res.exit_code == 2 and "pass --overwrite to replace it" in res.output and "overwrite=True" not in res.output
    assert (out / "mine.txt").read_text() == "x"


def test_clean_errors(berts, tmp_path):
    res = runner.invoke(app, ["merge", "--models", str(berts[0]), str(berts[1]), "--out", str(tmp_path / "m")])
    assert res.exit_code == 2 and "exactly one of --weights or --examples" in res.output
    res = runner.invoke(
        app, ["merge", "-m", str(berts[0]), str(berts[1]), "-w", "0.5", "0.2", "-t", "seq2seq", "-o", str(tmp_path)]
    )
    assert res.exit_code == 2 and "unknown model_type 'seq2seq'" in res.output
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    res = runner.invoke(app, ["merge", "-m", str(berts[0]), str(berts[1]), "--examples", str(empty), "-o", "x"])
    assert res.exit_code == 2 and "example_data is empty" in res.output


def test_merge_copies_only_the_models_own_files(berts, tmp_path):
    import shutil

    trained = tmp_path / "trained"
    shutil.copytree(berts[0], trained)
    tiny_models.add_st_config(trained, "mean", True, 64)
    ckpt = trained / "checkpoint-500"
    ckpt.mkdir()
    (ckpt / "optimizer.pt").write_bytes(b"0" * 10_000)
    shutil.copy2(trained / "model.safetensors", ckpt / "model.safetensors")
    for name in ("trainer_state.json", "training_args.bin", "optimizer.pt", "loss_history.json", "flagembed_run.json"):
        (trained / name).write_text("{}")
    (trained / "runs").mkdir()
    (trained / "runs" / "events.out.tfevents.1").write_text("x")
    out = tmp_path / "m"
    res = runner.invoke(app, ["merge", "-m", str(trained), str(berts[1]), "-w", "0.5", "0.5", "-o", str(out)])
    assert res.exit_code == 0, res.output
    names = sorted(p.name for p in out.iterdir())
    assert "1_Pooling" in names and "2_Normalize" in names and "tokenizer.json" in names and "config.json" in names
    left_out = {"checkpoint-500", "runs", "trainer_state.json", "training_args.bin", "optimizer.pt"}
    left_out |= {"loss_history.json", "flagembed_run.json"}
    assert not left_out & set(names)
    _check(out, [trained, berts[1]], [0.5, 0.5])


def test_merge_by_examples_caps_long_texts_at_the_model_limit(berts, tmp_path):
    long_text = " ".join(["cells protein gene blood virus"] * 60)  # 300 tokens; the models have 128 positions
    rows = [
        {"query": long_text, "pos": [long_text], "neg": ["water fire", long_text + " city"]},
        {"query": "hiv drug therapy", "pos": ["virus drug clinical"], "neg": [long_text, "fast slow"]},
    ]
    examples = tmp_path / "ex.jsonl"
    examples.write_text("\n".join(json.dumps(r) for r in rows))
    res = runner.invoke(
        app,
        ["merge", "--models", str(berts[0]), str(berts[1]), "--examples", str(examples), "--neg-number", "2",
         "--out", str(tmp_path / "m"), "--device", "cpu"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert (tmp_path / "m" / "model.safetensors").is_file()
