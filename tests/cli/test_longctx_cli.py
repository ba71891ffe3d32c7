"""``flagembed longctx eval ...`` through typer's CliRunner on a tiny Llama."""

from __future__ import annotations

import json

import pytest
from tiny_longctx import bpe_tokenizer, build_llama
from typer.testing import CliRunner

from flagembed.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    return build_llama(tmp_path_factory.mktemp("cli") / "llama", bpe_tokenizer())


def test_passkey_writes_json_and_heatmap(llama, tmp_path):
    res = runner.invoke(app, ["longctx", "eval", "passkey", "-m", str(llama), "--lengths", "100,140", "--depths",
                              "0,100", "--max-new-tokens", "2", "-o", str(tmp_path / "r.json"), "--plot",
                              str(tmp_path / "h.png"), "--rope-theta", "1e6"])
    assert res.exit_code == 0, res.output
    out = json.loads((tmp_path / "r.json").read_text())
    assert out["lengths"] == [100, 140] and len(out["matrix"][0]) == 2
    assert (tmp_path / "h.png").read_bytes()[:4] == b"\x89PNG"
    assert "d100" in res.output


def test_ppl_and_errors(llama, tmp_path):
    data = tmp_path / "t.txt"
    data.write_text("The grass is green. The sky is blue. " * 30 + "\nshort\n")
    res = runner.invoke(app, ["longctx", "eval", "ppl", "-m", str(llama), "--data", str(data), "--lengths", "32,64"])
    assert res.exit_code == 0, res.output
    assert "ppl" in res.output
    bad = runner.invoke(app, ["longctx", "eval", "passkey", "-m", str(llama), "--lengths", "x"])
    assert bad.exit_code == 2 and "--lengths" in bad.output
    missing = runner.invoke(app, ["longctx", "eval", "longbench", "-m", str(llama), "--data", str(tmp_path)])
    assert missing.exit_code == 2 and "no LongBench task file" in missing.output


def test_extend_and_merge(llama, tmp_path):
    from transformers import AutoModelForCausalLM

    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"text": "The grass is green. The sky is blue. " * 10}) + "\n")
    res = runner.invoke(app, ["longctx", "extend", "-m", str(llama), "--data", str(data), "-o", str(tmp_path / "run"),
                              "--max-length", "64", "--rope-theta", "5e5", "--lora-rank", "2", "--max-steps", "1"])
    assert res.exit_code == 0, res.output
    assert "trainable_parameters" in res.output
    res = runner.invoke(app, ["longctx", "merge", "--adapter", str(tmp_path / "run" / "adapter"), "-o",
                              str(tmp_path / "merged")])
    assert res.exit_code == 0, res.output
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    assert json.loads((tmp_path / "merged" / "config.json").read_text())["rope_theta"] == 5e5
    assert merged.config.vocab_size > 0
    bad = runner.invoke(app, ["longctx", "extend", "-m", str(llama), "--data", str(tmp_path / "none.jsonl"), "-o",
                              str(tmp_path / "x")])
    assert bad.exit_code == 2 and "none.jsonl" in bad.output


def test_synth_writes_rows(llama, tmp_path):
    res = runner.invoke(app, ["longctx", "synth", "-m", str(llama), "-o", str(tmp_path / "s.jsonl"), "-n", "3",
                              "--lengths", "100", "--kinds", "passkey,kv"])
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in (tmp_path / "s.jsonl").read_text().splitlines()]
    assert [r["kind"] for r in rows] == ["passkey", "kv", "passkey"]


def test_passkey_with_beacon(llama, tmp_path):
    args = ["longctx", "eval", "passkey", "-m", str(llama), "--lengths", "100", "--depths", "50", "--max-new-tokens",
            "2", "--beacon"]
    res = runner.invoke(app, [*args, "-o", str(tmp_path / "b.json")])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "b.json").read_text())["lengths"] == [100]
    bad = runner.invoke(app, [*args, "--rope-theta", "1e6"])
    assert bad.exit_code == 2 and "--beacon" in bad.output
