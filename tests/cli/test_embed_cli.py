import json

import numpy as np
import pytest
from typer.testing import CliRunner

from flagembed import Embedder
from flagembed.cli import app

runner = CliRunner()


def test_embed_txt_and_jsonl(tiny_bert, tmp_path):
    txt = tmp_path / "in.txt"
    txt.write_text("blue water\nred fire\n\nthe cells\n")
    out = tmp_path / "out.npy"
    res = runner.invoke(app, ["embed", "--model", str(tiny_bert), "--input", str(txt), "--output", str(out)])
    assert res.exit_code == 0, res.output
    arr = np.load(out)
    np.testing.assert_allclose(arr, Embedder(tiny_bert).encode(["blue water", "red fire", "the cells"]), atol=1e-6)

    jl = tmp_path / "in.jsonl"
    jl.write_text("\n".join(json.dumps(d) for d in [{"title": "t", "text": "blue water"}, {"text": "red"}]))
    res = runner.invoke(
        app,
        ["embed", "-m", str(tiny_bert), "-i", str(jl), "-o", str(out), "--queries", "--instruction", "q: "],
    )
    assert res.exit_code == 0, res.output
    np.testing.assert_allclose(np.load(out), Embedder(tiny_bert).encode(["q: t blue water", "q: red"]), atol=1e-6)


def test_embed_reports_truncation(tiny_bert, tmp_path):
    txt = tmp_path / "in.txt"
    txt.write_text("the " * 50 + "\nshort\n")
    res = runner.invoke(
        app, ["embed", "-m", str(tiny_bert), "-i", str(txt), "-o", str(tmp_path / "o.npy"), "--max-length", "8"]
    )
    assert res.exit_code == 0
    assert "1 of 2 inputs were truncated" in res.output


def test_embed_bad_input_is_a_clean_error(tiny_bert, tmp_path):
    jl = tmp_path / "bad.jsonl"
    jl.write_text('{"text": "ok"}\n{"text": 5}\n')
    out = tmp_path / "o.npy"
    res = runner.invoke(app, ["embed", "-m", str(tiny_bert), "-i", str(jl), "-o", str(out)])
    assert res.exit_code == 2 and "corpus[1]" in res.output
    assert not out.exists()


def test_models_lists_registry():
    res = runner.invoke(app, ["models", "--kind", "m3"])
    assert res.exit_code == 0 and "BAAI/bge-m3" in res.output and "bge-small-en" not in res.output


def test_help_everywhere():
    for cmd in ([], ["embed"], ["models"], ["demo"]):
        res = runner.invoke(app, [*cmd, "--help"])
        assert res.exit_code == 0 and "Usage" in res.output


@pytest.mark.slow
def test_demo_runs_on_bundled_data(minilm_path):
    res = runner.invoke(app, ["demo", "--show", "2"])
    assert res.exit_code == 0, res.output
    assert "recall@3" in res.output and res.output.count("claim:") == 2
