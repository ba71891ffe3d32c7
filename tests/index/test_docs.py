"""Documents stored with a HybridSearcher: returned with the hits, removed with their ids, saved and loaded."""

from __future__ import annotations

import hashlib
import json

import pytest

from flagembed import Embedder
from flagembed.index import HybridSearcher, IndexFormatError

DOCS = [
    {"title": "genes", "text": "the protein gene cancer study", "year": 2001},
    {"title": "", "text": "dense vector search model", "metadata": {"url": "http://x"}},
    "blood virus hiv drug therapy",
]
IDS = ["g", "v", "h"]


@pytest.fixture(scope="module")
def embedder(tiny_bert) -> Embedder:
    return Embedder(tiny_bert, device="cpu")


def _want(doc_id: str) -> dict:
    return {
        "g": {"title": "genes", "text": "the protein gene cancer study", "metadata": {"year": 2001}},
        "v": {"title": "", "text": "dense vector search model", "metadata": {"url": "http://x"}},
        "h": {"title": "", "text": "blood virus hiv drug therapy", "metadata": {}},
        "n": {"title": "new", "text": "fire water", "metadata": {}},
    }[doc_id]


def test_hits_carry_their_documents(embedder, tmp_path) -> None:
    s = HybridSearcher.build(embedder, DOCS, IDS)
    res = s.search(["gene cancer", "hiv"], top_k=3)
    assert res.docs is not None and len(res.docs) == 2
    for ids, docs in zip(res.ids, res.docs):
        assert docs == [_want(i) for i in ids]
    s.add(["n"], [{"title": "new", "text": "fire water"}])
    assert s.remove(["g"]) == 1
    res = s.search("gene cancer", top_k=3)
    assert "g" not in res.ids[0] and res.docs[0] == [_want(i) for i in res.ids[0]]
    s.save(tmp_path / "idx")
    assert "docs.jsonl" in json.loads((tmp_path / "idx" / "manifest.json").read_text())["files"]
    lines = (tmp_path / "idx" / "docs.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["id"] for line in lines) == ["h", "n", "v"]  # the removed one is gone
    loaded = HybridSearcher.load(tmp_path / "idx", embedder=embedder)
    assert loaded.search("gene cancer", top_k=3) == res


def test_without_stored_documents(embedder, tmp_path) -> None:
    s = HybridSearcher.build(embedder, DOCS, IDS, store_docs=False)
    assert s.search("gene", 2).docs is None
    s.save(tmp_path / "idx")
    assert not (tmp_path / "idx" / "docs.jsonl").exists()
    assert HybridSearcher.load(tmp_path / "idx", embedder=embedder).search("gene", 2).docs is None


def test_unserialisable_metadata_names_the_document(embedder, tmp_path) -> None:
    s = HybridSearcher.build(embedder, [{"text": "a b", "when": object()}], ["odd"])
    with pytest.raises(TypeError, match="document 'odd'"):
        s.save(tmp_path / "idx")


def _forge(path, name: str, data: str) -> None:
    (path / name).write_text(data, encoding="utf-8")
    m = json.loads((path / "manifest.json").read_text())
    m["files"][name] = hashlib.sha256((path / name).read_bytes()).hexdigest()
    (path / "manifest.json").write_text(json.dumps(m))


def test_stored_documents_are_verified(embedder, tmp_path) -> None:
    path = tmp_path / "idx"
    HybridSearcher.build(embedder, DOCS, IDS).save(path)
    good = (path / "docs.jsonl").read_text()
    first = good.splitlines()[0]
    _forge(path, "docs.jsonl", good + first + "\n")
    with pytest.raises(IndexFormatError, match="repeats"):
        HybridSearcher.load(path, embedder=embedder)
    _forge(path, "docs.jsonl", "\n".join(good.splitlines()[1:]) + "\n")
    with pytest.raises(IndexFormatError, match="missing ids"):
        HybridSearcher.load(path, embedder=embedder)
    _forge(path, "docs.jsonl", good + '{"id": "zz"}\n')
    with pytest.raises(IndexFormatError, match="docs.jsonl:4"):
        HybridSearcher.load(path, embedder=embedder)
    m = json.loads((path / "manifest.json").read_text())
    m["files"] = {}  # an emptied list no longer skips verification
    (path / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(IndexFormatError, match="does not list"):
        HybridSearcher.load(path, embedder=embedder)
