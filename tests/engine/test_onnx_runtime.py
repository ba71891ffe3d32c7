"""Embedder on the ONNX backend: fp32 equals the torch path and sentence-transformers; int8 stays close."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from flagembed import Embedder  # noqa: E402


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> object:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FLAGEMBED_CACHE", str(tmp_path_factory.mktemp("onnx-cache")))
        yield


@pytest.fixture(scope="module")
def texts(scifact_texts: list[str]) -> list[str]:
    return scifact_texts[:200]


@pytest.fixture(scope="module")
def reference(minilm_path: Path, texts: list[str]) -> np.ndarray:
    """sentence-transformers' fp32 embeddings of the same texts (an independent implementation)."""
    st = pytest.importorskip("sentence_transformers")
    model = st.SentenceTransformer(str(minilm_path), device="cpu")
    return model.encode(texts, batch_size=32, convert_to_numpy=True)


def test_onnx_fp32_equals_torch_and_sentence_transformers(
    cache: object, minilm_path: Path, texts: list[str], reference: np.ndarray
) -> None:
    few = texts[:64]
    onnx = Embedder(minilm_path, backend="onnx", batch_size=16)
    torch_path = Embedder(minilm_path, device="cpu", batch_size=16)
    got = onnx.encode(few)
    assert got.shape == reference[:64].shape and got.dtype == np.float32
    assert np.abs(got - reference[:64]).max() <= 1e-4
    assert np.abs(got - torch_path.encode(few)).max() <= 1e-4
    assert onnx.last_truncated == torch_path.last_truncated > 0  # real abstracts exceed 256 tokens
    # the per-call options that torch honours work the same way
    cut = onnx.encode(few[:5], truncate_dim=64, normalize=False)
    assert np.abs(cut - torch_path.encode(few[:5], truncate_dim=64, normalize=False)).max() <= 1e-4


@pytest.mark.slow
def test_int8_cosine_to_fp32_on_200_real_texts(
    cache: object, minilm_path: Path, texts: list[str], reference: np.ndarray
) -> None:
    int8 = Embedder(minilm_path, backend="onnx", quantize="int8")
    got = int8.encode(texts)
    ref = reference / np.linalg.norm(reference, axis=1, keepdims=True)
    cos = (got * ref).sum(axis=1) / np.linalg.norm(got, axis=1)
    assert len(cos) == 200
    assert cos.min() >= 0.99, f"text {int(cos.argmin())}: cosine {cos.min():.4f}"


def test_onnx_embedder_on_a_tiny_checkpoint(cache: object, tiny_bert: Path) -> None:
    onnx = Embedder(tiny_bert, backend="onnx", pooling="mean", num_threads=1)
    ref = Embedder(tiny_bert, device="cpu", pooling="mean")
    texts = ["the cell", "a protein of the brain in mouse and human", "what is the risk of cancer"]
    assert onnx.onnx is not None and onnx.onnx.num_threads == 1
    assert onnx.device.type == "cpu"
    assert np.abs(onnx.encode(texts) - ref.encode(texts)).max() <= 1e-4
    assert onnx.encode([]).shape == (0, onnx.dim)


def test_backend_arguments_are_checked(tiny_bert: Path) -> None:
    with pytest.raises(ValueError, match="valid: torch, onnx"):
        Embedder(tiny_bert, backend="tensorrt")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs backend='openvino' .* or 'onnx'"):
        Embedder(tiny_bert, quantize="int8")
    with pytest.raises(ValueError, match="valid: None, int8"):
        Embedder(tiny_bert, backend="onnx", quantize="int4")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="runs on one CPU device"):
        Embedder(tiny_bert, backend="onnx", device="meta")


def test_openvino_backend_on_the_same_export(cache: object, tiny_bert: Path) -> None:
    pytest.importorskip("openvino")
    ov = Embedder(tiny_bert, backend="openvino", pooling="mean", num_threads=1)
    ref = Embedder(tiny_bert, device="cpu", pooling="mean")
    texts = ["the cell", "a protein of the brain in mouse and human", "what is the risk of cancer"]
    assert np.abs(ov.encode(texts) - ref.encode(texts)).max() <= 1e-4
    assert ov.onnx.precision_hint == "f32"  # an fp32 graph runs exactly in fp32


def test_openvino_precision_follows_dtype(cache: object, tiny_bert: Path) -> None:
    """dtype picks OpenVINO's precision for the non-int8 ops: bf16 when asked (or auto on bf16 CPUs), else f32."""
    pytest.importorskip("openvino")
    texts = ["the cell", "a protein of the brain in mouse and human", "what is the risk of cancer"]
    bf16 = Embedder(tiny_bert, backend="openvino", pooling="mean", dtype="bf16", num_threads=1)
    assert bf16.onnx.precision_hint == "bf16"
    ref = Embedder(tiny_bert, device="cpu", pooling="mean", dtype="fp32").encode(texts)
    got = bf16.encode(texts)
    assert got.dtype == np.float32 and np.min(np.sum(got * ref, axis=1)) >= 0.99  # bf16 rounding, not fp32-exact
    assert Embedder(tiny_bert, backend="openvino", pooling="mean", dtype="fp32").onnx.precision_hint == "f32"


@pytest.mark.slow
def test_openvino_static_int8_export_folder(
    cache: object, tiny_bert: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """NNCF static int8: an OpenVINO IR, close to fp32, cached, and refused by onnxruntime."""
    pytest.importorskip("nncf")
    from flagembed.engine.backends import export_onnx, load_runner

    texts = ["the cell", "a protein of the brain in mouse and human", "what is the risk of cancer"] * 4
    calib = [f"calibration text {i} about cells, proteins and risk" for i in range(24)]
    out = export_onnx(tiny_bert, out=tmp_path / "ov8", quantize="int8", runtime="openvino", calibration_texts=calib)
    assert capsys.readouterr().out == ""  # NNCF's progress bars do not reach the user's stdout
    assert out.model_file.name == "model_int8.xml" and (out.path / "model_int8.bin").is_file()
    assert out.manifest["options"]["quantization"]["method"] == "nncf-static"
    assert not (out.path / "model.onnx").exists()  # the fp32 scratch graph is not kept in the folder
    int8 = Embedder(out.path, backend="openvino", pooling="mean")
    ref = Embedder(tiny_bert, device="cpu", dtype="fp32", pooling="mean").encode(texts)
    got = int8.encode(texts)
    assert got.shape == ref.shape and float((got * ref).sum(1).min()) > 0.95
    with pytest.raises(ValueError, match="OpenVINO int8 export; load it with backend='openvino'"):
        load_runner("onnx", out.path)
    assert export_onnx(tiny_bert, out=tmp_path / "ov8", quantize="int8", runtime="openvino").reused
