"""``flagembed export`` (onnx fp32 and int8) -> embed on ONNX Runtime from the export folder.

Both ways a user would: ``flagembed embed --backend onnx -m FOLDER`` and ``Embedder(folder, backend="onnx")``
in a fresh Python process.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from e2e_helpers import assert_clean_error, cosine_rows, name_only

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
pytestmark = pytest.mark.slow

TEXTS = ["BGE is a general embedding model.", "ONNX Runtime runs it on CPUs.", "Statins reduce LDL cholesterol."]

ENCODE = """
import json, sys
import numpy as np
from flagembed import Embedder
emb = Embedder(sys.argv[1], backend="onnx")
np.save(sys.argv[2], emb.encode(json.loads(sys.argv[3])))
"""


@pytest.fixture(scope="module")
def exported(ws):
    """fp32 and int8 exports; with the relative-folder spelling only int8 (each export costs ~30 s)."""
    if ws.kind == "name":
        ws.run("export", "--model", ws.model, "--backend", "onnx", "--out", "onnx-fp32", timeout=600)
    ws.run("export", "--model", ws.model, "--backend", "onnx", "--quantize", "int8", "--out", "onnx-int8",
           timeout=600)  # fmt: skip
    return ws.cwd / "onnx-fp32", ws.cwd / "onnx-int8"


def _encode_from(ws, folder: str, out: str) -> np.ndarray:
    import sys

    from e2e_helpers import run_process

    run_process([sys.executable, "-c", ENCODE, folder, out, json.dumps(TEXTS)], ws.cwd, ws.env, 300, True)
    return np.load(ws.cwd / out)


def test_export_folders(exported):
    for folder in [f for f in exported if f.exists() or f.name.endswith("int8")]:
        assert (folder / "model.onnx").is_file() and (folder / "manifest.json").is_file()
        assert (folder / "tokenizer.json").is_file() or (folder / "vocab.txt").is_file()


def test_embed_from_fp32_export(exported, ws, local_embedder):
    name_only(ws)
    got = _encode_from(ws, "onnx-fp32", "onnx-fp32.npy")
    np.testing.assert_allclose(got, local_embedder.encode(TEXTS), atol=1e-4)


def test_embed_from_int8_export(exported, ws, local_embedder):
    got = _encode_from(ws, "onnx-int8", "onnx-int8.npy")
    ref = local_embedder.encode(TEXTS)
    assert cosine_rows(got, ref).min() >= 0.98
    assert np.abs(got - ref).max() > 1e-5, "the int8 export gives fp32 vectors: it was not quantized"


def test_cli_embed_from_the_int8_export(exported, ws, local_embedder):
    (ws.cwd / "texts.txt").write_text("\n".join(TEXTS) + "\n")
    ws.run("embed", "--backend", "onnx", "-m", "onnx-int8", "-i", "texts.txt", "-o", "cli-int8.npy", timeout=300)
    got = np.load(ws.cwd / "cli-int8.npy")
    assert cosine_rows(got, local_embedder.encode(TEXTS)).min() >= 0.98
    np.testing.assert_allclose(got, _encode_from(ws, "onnx-int8", "py-int8.npy"), atol=1e-6)


def test_plain_onnxruntime_on_export(exported, ws, local_embedder):
    """docs/cpu.md's plain-onnxruntime recipe on the int8 folder."""
    import onnxruntime as ort
    from transformers import AutoTokenizer

    name_only(ws)
    folder = exported[1]
    tok = AutoTokenizer.from_pretrained(str(folder))
    enc = tok(TEXTS[:1], return_tensors="np")
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    hidden = session.run(None, {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]})[0]
    mask = enc["attention_mask"][..., None]
    vector = (hidden * mask).sum(1) / mask.sum(1)
    assert cosine_rows(vector, local_embedder.encode(TEXTS[:1])).min() >= 0.98


def test_export_refuses_non_empty_folder(ws_name):
    (ws_name.cwd / "mine").mkdir(exist_ok=True)
    (ws_name.cwd / "mine" / "notes.txt").write_text("keep", encoding="utf-8")
    res = ws_name.run("export", "--model", ws_name.model, "--out", "mine", check=False)
    assert_clean_error(res, "mine")
    assert (ws_name.cwd / "mine" / "notes.txt").read_text(encoding="utf-8") == "keep"
