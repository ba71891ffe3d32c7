"""``flagembed export``: writes an ONNX folder, reuses it when fresh, reports bad options cleanly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from flagembed.cli import app  # noqa: E402

runner = CliRunner()


def test_export_writes_a_runnable_folder_and_reuses_it(tiny_bert: Path, tmp_path: Path) -> None:
    import onnxruntime as ort
    import torch
    from transformers import AutoModel

    out = tmp_path / "onnx"
    result = runner.invoke(app, ["export", "--model", str(tiny_bert), "--backend", "onnx", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "exported" in result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["options"]["quantize"] is None
    ids = np.array([[2, 10, 11, 12, 3]], dtype=np.int64)
    mask = np.ones_like(ids)
    got = ort.InferenceSession(str(out / "model.onnx")).run(None, {"input_ids": ids, "attention_mask": mask})[0]
    with torch.no_grad():
        want = AutoModel.from_pretrained(str(tiny_bert))(input_ids=torch.from_numpy(ids)).last_hidden_state.numpy()
    assert np.abs(got - want).max() <= 1e-4

    again = runner.invoke(app, ["export", "-m", str(tiny_bert), "--out", str(out)])
    assert again.exit_code == 0 and "reused" in again.output


def test_export_int8(tiny_bert: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLAGEMBED_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "q"
    result = runner.invoke(app, ["export", "-m", str(tiny_bert), "--quantize", "int8", "--out", str(out)])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["options"]["quantize"] == "int8"
    import onnx

    ops = {n.op_type for n in onnx.load(str(out / "model.onnx")).graph.node}
    assert "DynamicQuantizeLinear" in ops or "MatMulInteger" in ops


def test_export_errors(tiny_bert: Path, tmp_path: Path) -> None:
    bad = runner.invoke(app, ["export", "-m", str(tiny_bert), "--quantize", "int4", "--out", str(tmp_path / "a")])
    assert bad.exit_code == 2 and "valid: None, int8" in bad.output
    other = runner.invoke(app, ["export", "-m", str(tiny_bert), "--backend", "tensorrt"])
    assert other.exit_code == 2 and "valid: onnx, openvino" in other.output
    fp32_ov = runner.invoke(app, ["export", "-m", str(tiny_bert), "--backend", "openvino", "-o", str(tmp_path / "c")])
    assert fp32_ov.exit_code == 2 and "exports int8 only (give --quantize int8)" in fp32_ov.output
    missing = runner.invoke(app, ["export", "-m", str(tmp_path / "nope"), "--out", str(tmp_path / "b")])
    assert missing.exit_code == 2 and "not found" in missing.output


def test_export_refuses_an_existing_file_before_any_work(tiny_bert: Path, tmp_path: Path) -> None:
    target = tmp_path / "notes.txt"
    target.write_text("keep me")
    res = runner.invoke(app, ["export", "-m", str(tiny_bert), "--out", str(target)])
    assert res.exit_code == 2 and "is a file; give a folder" in res.output
    assert len(res.output.strip().splitlines()) == 1
    assert target.read_text() == "keep me" and sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    from flagembed.engine.backends import export_onnx

    with pytest.raises(ValueError, match="is a file"):
        export_onnx(tiny_bert, out=target)
    assert target.read_text() == "keep me"


def test_int8_export_to_a_folder_leaves_the_cache_alone(
    tiny_bert: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("FLAGEMBED_CACHE", str(cache))
    out = tmp_path / "q"
    result = runner.invoke(app, ["export", "-m", str(tiny_bert), "--quantize", "int8", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert not cache.exists()  # no fp32 export written unasked
    assert sorted(p.name for p in out.iterdir() if p.name.startswith((".", "fp32"))) == []
    assert json.loads((out / "manifest.json").read_text())["options"]["quantize"] == "int8"


def test_embedder_loads_an_export_folder(tiny_bert: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tiny_models

    from flagembed import Embedder, M3Embedder

    monkeypatch.setenv("FLAGEMBED_CACHE", str(tmp_path / "cache"))
    source = tiny_models.add_st_config(tiny_models.build_bert(tmp_path / "src", seed=2), "mean", True, 64)
    out = tmp_path / "export"
    assert runner.invoke(app, ["export", "-m", str(source), "--out", str(out)]).exit_code == 0
    texts = ["the cell", "a protein of the brain in mouse and human"]
    want = Embedder(source, device="cpu").encode(texts)
    exported = Embedder(out, backend="onnx")
    assert exported.settings.pooling == "mean" and exported.max_length == 64
    np.testing.assert_allclose(exported.encode(texts), want, atol=1e-4)
    with pytest.raises(ValueError, match="ONNX export folder.*backend='onnx'"):
        Embedder(out)
    with pytest.raises(ValueError, match="holds fp32 weights"):
        Embedder(out, backend="onnx", quantize="int8")
    with pytest.raises(ValueError, match="M3Embedder runs on backend='torch' only"):
        M3Embedder(source, backend="onnx")


def test_export_shows_progress_on_a_terminal(
    tiny_bert: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    from flagembed.engine.backends import export_onnx

    export_onnx(tiny_bert, out=tmp_path / "a")
    assert "ONNX export" not in capsys.readouterr().err
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    export_onnx(tiny_bert, out=tmp_path / "b")
    err = capsys.readouterr().err
    assert "ONNX export of" in err and "/2" in err
