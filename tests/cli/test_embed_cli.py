import json
import os
import stat

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


def _one_error_line(res) -> str:
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert res.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), res.output
    return lines[0]


def test_embed_says_when_blank_lines_are_skipped_and_can_keep_them(tiny_bert, tmp_path):
    txt = tmp_path / "in.txt"
    txt.write_text("a\n\nb\n")
    out = tmp_path / "o.npy"
    res = runner.invoke(app, ["embed", "-m", str(tiny_bert), "-i", str(txt), "-o", str(out)])
    assert res.exit_code == 0 and "skipped 1 blank line(s)" in res.output
    assert np.load(out).shape[0] == 2
    res = runner.invoke(app, ["embed", "-m", str(tiny_bert), "-i", str(txt), "-o", str(out), "--keep-blank"])
    assert res.exit_code == 0 and "skipped" not in res.output
    assert np.load(out).shape[0] == 3


def test_embed_warns_on_empty_input(tiny_bert, tmp_path):
    txt = tmp_path / "empty.txt"
    txt.write_text("")
    res = runner.invoke(app, ["embed", "-m", str(tiny_bert), "-i", str(txt), "-o", str(tmp_path / "o.npy")])
    assert res.exit_code == 0 and "holds no texts" in res.output
    assert np.load(tmp_path / "o.npy").shape == (0, 32)


def test_embed_checks_the_output_before_loading_the_model(tmp_path):
    txt = tmp_path / "in.txt"
    txt.write_text("a\n")
    # the model does not exist: the output error must come first (no model load was attempted)
    line = _one_error_line(runner.invoke(app, ["embed", "-m", "nope/nope", "-i", str(txt), "-o", str(tmp_path)]))
    assert f"cannot write {tmp_path}: is a directory" in line
    line = _one_error_line(runner.invoke(app, ["embed", "-m", "nope/nope", "-i", str(txt), "-o", str(txt / "o.npy")]))
    assert "is not a directory" in line
    line = _one_error_line(runner.invoke(app, ["embed", "-m", "nope/nope", "-i", str(txt), "-o", "/proc/o.npy"]))
    assert "cannot write /proc/o.npy" in line


def test_embed_non_utf8_input_names_the_line(tiny_bert, tmp_path):
    txt = tmp_path / "latin1.txt"
    txt.write_bytes("ok\ncaf\xe9\n".encode("latin-1"))
    line = _one_error_line(runner.invoke(app, ["embed", "-m", str(tiny_bert), "-i", str(txt), "-o", "o.npy"]))
    assert "latin1.txt:2: not valid UTF-8" in line


def test_embed_to_stdout_symlink_and_dev_null(tiny_bert, tmp_path):
    txt = tmp_path / "in.txt"
    txt.write_text("a\nb\n")
    res = runner.invoke(app, ["embed", "-m", str(tiny_bert), "-i", str(txt), "--out", "-"])
    assert res.exit_code == 0 and res.stdout_bytes.startswith(b"\x93NUMPY")
    real = tmp_path / "real.npy"
    real.write_bytes(b"")
    link = tmp_path / "link.npy"
    link.symlink_to(real)
    res = runner.invoke(app, ["embed", "-m", str(tiny_bert), "-i", str(txt), "-o", str(link)])
    assert res.exit_code == 0 and link.is_symlink() and np.load(real).shape == (2, 32)
    res = runner.invoke(app, ["embed", "-m", str(tiny_bert), "-i", str(txt), "-o", "/dev/null"])
    assert res.exit_code == 0 and stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_embed_limits_are_not_silently_ignored(tiny_bert, tmp_path):
    txt = tmp_path / "in.txt"
    txt.write_text("a\n")
    res = runner.invoke(app, ["embed", "-m", str(tiny_bert), "-i", str(txt), "-o", "o.npy", "--max-length", "0"])
    assert res.exit_code == 2 and "--max-length" in res.output
    line = _one_error_line(
        runner.invoke(app, ["embed", "-m", str(tiny_bert), "-i", str(txt), "-o", "o.npy", "--truncate-dim", "999"])
    )
    assert "truncate_dim must be between 1 and the model's dimension 32, got 999" in line
