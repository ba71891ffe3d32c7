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
    assert other.exit_code == 2 and "valid: onnx" in other.output
    missing = runner.invoke(app, ["export", "-m", str(tmp_path / "nope"), "--out", str(tmp_path / "b")])
    assert missing.exit_code == 2 and "not found" in missing.output
