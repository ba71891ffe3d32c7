"""The model identity of an index: weights fingerprint + settings, however the model was named; remote code consent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flagembed import Embedder
from flagembed.index import HybridSearcher, IndexFormatError, IndexMismatchError

CORPUS = ["the protein gene cancer study", "dense vector search model", "blood virus hiv drug therapy"]
QUERIES = ["gene cancer", "vector search"]


def _manifest(path: Path) -> dict:
    return json.loads((path / "manifest.json").read_text(encoding="utf-8"))


def test_bundled_name_reloads_without_embedder(minilm_path, tmp_path, monkeypatch) -> None:
    built = HybridSearcher.build(Embedder("all-MiniLM-L6-v2", device="cpu"), CORPUS)
    built.save(tmp_path / "idx")
    monkeypatch.chdir(tmp_path)
    loaded = HybridSearcher.load("idx", device="cpu")  # used to fail: name 'sentence-transformers/…' vs a path
    assert loaded.search(QUERIES, 2).ids == built.search(QUERIES, 2).ids
    source = _manifest(tmp_path / "idx")["params"]["model_source"]
    assert source["name"] == "sentence-transformers/all-MiniLM-L6-v2" and Path(source["path"]) == minilm_path
    # the same weights by their folder are the same model, with the registry's settings passed on
    HybridSearcher.load("idx", embedder=Embedder(minilm_path, device="cpu"))


def test_relative_folder_reloads_from_another_cwd(tiny_bert, tmp_path, monkeypatch) -> None:
    import shutil

    work, other = tmp_path / "work", tmp_path / "other"
    other.mkdir()
    shutil.copytree(tiny_bert, work / "models" / "x")
    monkeypatch.chdir(work)
    built = HybridSearcher.build(Embedder("models/x", device="cpu"), CORPUS)
    built.save(tmp_path / "idx")
    monkeypatch.chdir(other)  # "models/x" means nothing here
    loaded = HybridSearcher.load(tmp_path / "idx", device="cpu")
    assert loaded.search(QUERIES, 3) == built.search(QUERIES, 3)
    HybridSearcher.load(tmp_path / "idx", embedder=Embedder(work / "models" / "x", device="cpu"))


def test_changed_weights_or_settings_are_refused(tiny_bert, tiny_xlmr, tmp_path) -> None:
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_bert, model)
    HybridSearcher.build(Embedder(model, device="cpu"), CORPUS).save(tmp_path / "idx")
    with pytest.raises(IndexMismatchError, match="normalize"):
        HybridSearcher.load(tmp_path / "idx", embedder=Embedder(model, device="cpu", normalize=False))
    with pytest.raises(IndexMismatchError, match="weights"):
        HybridSearcher.load(tmp_path / "idx", embedder=Embedder(tiny_xlmr, device="cpu"))
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes() + b" ")  # other weights in the recorded folder
    with pytest.raises(IndexMismatchError, match="other weights"):
        HybridSearcher.load(tmp_path / "idx", device="cpu")
    shutil.rmtree(model)
    with pytest.raises(FileNotFoundError, match="not available"):
        HybridSearcher.load(tmp_path / "idx", device="cpu")


class _Spy(Embedder):
    calls: list[dict] = []

    def __init__(self, path, **kwargs) -> None:
        type(self).calls.append(kwargs)
        super().__init__(path, **kwargs)


def test_load_passes_trust_remote_code_false_and_verifies_first(tiny_bert, tmp_path, monkeypatch) -> None:
    import flagembed.index.identity as identity

    HybridSearcher.build(Embedder(tiny_bert, device="cpu"), CORPUS).save(tmp_path / "idx")
    monkeypatch.setattr(identity, "Embedder", _Spy)
    _Spy.calls.clear()
    HybridSearcher.load(tmp_path / "idx", device="cpu")
    assert [c["trust_remote_code"] for c in _Spy.calls] == [False]
    HybridSearcher.load(tmp_path / "idx", device="cpu", trust_remote_code=True)  # consent, but the build used none
    assert [c["trust_remote_code"] for c in _Spy.calls] == [False, False]
    (tmp_path / "idx" / "dense" / "ids.json").write_text('{"labels": [], "alive": []}')
    with pytest.raises(IndexFormatError, match="ids.json"):
        HybridSearcher.load(tmp_path / "idx", device="cpu")
    assert len(_Spy.calls) == 2  # no model was built for an index that does not verify


def test_remote_code_build_needs_consent_to_load(tiny_bert, tmp_path, monkeypatch) -> None:
    import flagembed.index.identity as identity

    HybridSearcher.build(Embedder(tiny_bert, device="cpu", trust_remote_code=True), CORPUS).save(tmp_path / "idx")
    assert _manifest(tmp_path / "idx")["params"]["model_source"]["trust_remote_code"] is True
    monkeypatch.setattr(identity, "Embedder", _Spy)
    _Spy.calls.clear()
    with pytest.raises(ValueError, match="built with trust_remote_code=True.*--trust-remote-code"):
        HybridSearcher.load(tmp_path / "idx", device="cpu")
    assert _Spy.calls == []
    HybridSearcher.load(tmp_path / "idx", device="cpu", trust_remote_code=True)
    assert [c["trust_remote_code"] for c in _Spy.calls] == [True]


def _fake_hub_cache(model: Path, cache: Path, repo: str = "org/tiny") -> Path:
    """A Hugging Face cache holding ``repo`` at revision main (blobs + snapshot symlinks), as a download leaves it."""
    import shutil

    root = cache / f"models--{repo.replace('/', '--')}"
    snap = root / "snapshots" / ("0" * 40)
    (root / "blobs").mkdir(parents=True)
    snap.mkdir(parents=True)
    for f in model.iterdir():
        blob = root / "blobs" / f.name
        shutil.copy2(f, blob)
        (snap / f.name).symlink_to(blob)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text("0" * 40)
    return snap


def test_hub_id_reloads_by_name_when_the_folder_moved(tiny_bert, tmp_path) -> None:
    cache = tmp_path / "hub"
    snap = _fake_hub_cache(tiny_bert, cache)
    built = HybridSearcher.build(Embedder("org/tiny", cache_dir=str(cache), device="cpu"), CORPUS)
    built.save(tmp_path / "idx")
    source = _manifest(tmp_path / "idx")["params"]["model_source"]
    assert source["name"] == "org/tiny" and Path(source["path"]) == snap
    manifest = _manifest(tmp_path / "idx")  # as if the index came from another machine: its folder is gone
    manifest["params"]["model_source"]["path"] = str(tmp_path / "gone")
    (tmp_path / "idx" / "manifest.json").write_text(json.dumps(manifest))
    loaded = HybridSearcher.load(tmp_path / "idx", cache_dir=str(cache), device="cpu")
    assert loaded.search(QUERIES, 3) == built.search(QUERIES, 3)
