"""ONNX export: hidden states equal torch's, cached exports are reused, stale ones rebuilt, writes are atomic."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

import onnxruntime as ort  # noqa: E402

from flagembed.engine import backends  # noqa: E402
from flagembed.engine.backends import onnx_export  # noqa: E402


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLAGEMBED_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def bert_copy(tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy of the tiny BERT whose files the staleness tests may touch."""
    return Path(shutil.copytree(tiny_bert, tmp_path_factory.mktemp("m") / "bert"))


@pytest.fixture(scope="module")
def bert_export(bert_copy: Path, tmp_path_factory: pytest.TempPathFactory) -> backends.OnnxExport:
    return backends.export_onnx(bert_copy, out=tmp_path_factory.mktemp("exp") / "fp32")


def _hidden_torch(model_dir: Path, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(model_dir)).eval()
    with torch.no_grad():
        return model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).last_hidden_state.numpy()


def _batch(vocab: int, rows: int, length: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, vocab, size=(rows, length), dtype=np.int64)
    lengths = rng.integers(2, length + 1, size=rows)
    lengths[0] = length
    mask = (np.arange(length)[None, :] < lengths[:, None]).astype(np.int64)
    return np.where(mask == 1, ids, 0), mask


@pytest.mark.parametrize(("rows", "length"), [(1, 3), (4, 17), (7, 64)])
def test_hidden_states_match_torch_for_other_shapes(
    bert_export: backends.OnnxExport, bert_copy: Path, rows: int, length: int
) -> None:
    ids, mask = _batch(100, rows, length, seed=rows)
    runner = backends.OnnxRunner(bert_export.model_file, num_threads=1)
    got = runner.hidden_states(ids, mask)
    want = _hidden_torch(bert_copy, ids, mask)
    real = mask.astype(bool)
    assert got.shape == want.shape
    assert np.abs(got[real] - want[real]).max() <= 1e-4


def test_xlmr_export_matches_torch(tiny_xlmr: Path, tmp_path: Path) -> None:
    export = backends.export_onnx(tiny_xlmr, out=tmp_path / "x")
    ids, mask = _batch(100, 3, 12, seed=3)
    ids = np.where(mask == 1, ids, 1)  # XLM-R pads with id 1
    got = backends.OnnxRunner(export.model_file).hidden_states(ids, mask)
    want = _hidden_torch(tiny_xlmr, ids, mask)
    real = mask.astype(bool)
    assert np.abs(got[real] - want[real]).max() <= 1e-4


def test_export_folder_has_manifest_and_side_files(bert_export: backends.OnnxExport, bert_copy: Path) -> None:
    manifest = backends.read_manifest(bert_export.path)
    assert manifest == bert_export.manifest
    assert manifest["fingerprint"] == backends.source_fingerprint(bert_copy)
    assert manifest["options"] == backends.export_options(None)
    assert manifest["files"] == ["model.onnx"]
    for name in ("config.json", "tokenizer.json", "model.onnx"):
        assert (bert_export.path / name).is_file()
    session = ort.InferenceSession(str(bert_export.model_file), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input_ids", "attention_mask"]
    assert [o.name for o in session.get_outputs()] == ["last_hidden_state"]


def test_cached_export_is_reused(bert_copy: Path) -> None:
    first = backends.export_onnx(bert_copy)
    mtime = first.model_file.stat().st_mtime_ns
    second = backends.export_onnx(bert_copy)
    assert not first.reused and second.reused
    assert second.path == first.path
    assert second.path.is_relative_to(backends.cache_root())
    assert second.model_file.stat().st_mtime_ns == mtime


def test_changed_weights_make_the_export_stale(tiny_bert: Path, tmp_path: Path) -> None:
    model = Path(shutil.copytree(tiny_bert, tmp_path / "m"))
    first = backends.export_onnx(model)
    # overwrite the weights with different ones (a new revision saved into the same folder)
    from transformers import AutoModel

    backbone = AutoModel.from_pretrained(str(model))
    with torch.no_grad():
        for p in backbone.parameters():
            p.mul_(0.5)
    backbone.save_pretrained(model, safe_serialization=True)
    ids, mask = _batch(100, 2, 9, seed=5)
    second = backends.export_onnx(model)
    assert not second.reused and second.path == first.path
    assert second.manifest["fingerprint"] != first.manifest["fingerprint"]
    got = backends.OnnxRunner(second.model_file).hidden_states(ids, mask)
    want = _hidden_torch(model, ids, mask)
    real = mask.astype(bool)
    assert np.abs(got[real] - want[real]).max() <= 1e-4  # the new weights, not the cached old graph


def test_revision_and_options_key_the_cache(bert_copy: Path, bert_export: backends.OnnxExport, tmp_path: Path) -> None:
    assert backends.source_fingerprint(bert_copy, "v2") != backends.source_fingerprint(bert_copy)
    # an export of the same weights asked for with another revision is stale
    old = Path(shutil.copytree(bert_export.path, tmp_path / "exp"))
    assert backends.export_onnx(bert_copy, out=old).reused
    again = backends.export_onnx(bert_copy, out=old, revision="v2")
    assert not again.reused and again.manifest["revision"] == "v2"
    assert backends.export_options("int8") != backends.export_options(None)
    assert backends.export_options(None, opset=17) != backends.export_options(None)


def test_failed_export_leaves_nothing_behind(bert_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object, **kwargs: object) -> list[str]:
        raise ValueError("export failed")

    monkeypatch.setattr(onnx_export, "_export_fp32", boom)
    with pytest.raises(ValueError, match="export failed"):
        backends.export_onnx(bert_copy, out=tmp_path / "out" / "x")
    assert os.listdir(tmp_path / "out") == []


def test_failed_rebuild_keeps_the_old_export(
    bert_copy: Path, bert_export: backends.OnnxExport, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = sorted(os.listdir(bert_export.path))

    def boom(*args: object, **kwargs: object) -> list[str]:
        raise ValueError("export failed")

    monkeypatch.setattr(onnx_export, "_export_fp32", boom)
    with pytest.raises(ValueError):
        backends.export_onnx(bert_copy, force=True, out=bert_export.path)
    assert sorted(os.listdir(bert_export.path)) == before
    assert [p for p in os.listdir(bert_export.path.parent) if p.startswith(".")] == []


def test_refuses_to_overwrite_a_foreign_folder(bert_copy: Path, tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not a flagembed ONNX export"):
        backends.export_onnx(bert_copy, out=tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_bad_arguments(bert_copy: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="valid: None, int8"):
        backends.export_onnx(bert_copy, quantize="int4")  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError, match="no weight files"):
        backends.export_onnx(tmp_path)
    with pytest.raises(ValueError, match="num_threads must be >= 1"):
        backends.OnnxRunner("unused.onnx", num_threads=0)


def test_thread_defaults(monkeypatch: pytest.MonkeyPatch, bert_export: backends.OnnxExport) -> None:
    monkeypatch.delenv("FLAGEMBED_NUM_THREADS", raising=False)
    assert 1 <= backends.default_threads() <= backends.cpu_count()  # one per physical core
    monkeypatch.setenv("FLAGEMBED_NUM_THREADS", "1")
    assert backends.OnnxRunner(bert_export.model_file).num_threads == 1
    monkeypatch.setenv("FLAGEMBED_NUM_THREADS", "0")
    with pytest.raises(ValueError, match="FLAGEMBED_NUM_THREADS"):
        backends.default_threads()
