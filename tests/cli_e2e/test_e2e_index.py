"""``flagembed index build`` then ``flagembed search`` (table and --json) in fresh processes."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
from e2e_helpers import assert_clean_error, assert_user_modes, name_only, read_corpus, read_queries


@pytest.fixture(scope="module")
def built(ws):
    """One index per workspace, shared by the search tests."""
    res = ws.run("index", "build", "-m", ws.model, "--corpus", "scifact/corpus.jsonl", "--out", "idx", "--no-progress")
    assert "indexed" in res.stdout
    return ws


@pytest.fixture(scope="module")
def expected(built, local_embedder):
    """The Python ranking for the first query: doc ids by cosine, best first, and their scores."""
    docs = read_corpus(built.cwd)
    query = read_queries(built.cwd)[0]["text"]
    d = local_embedder.encode_corpus([{"title": x["title"], "text": x["text"]} for x in docs])
    s = d @ local_embedder.encode_queries([query])[0]
    order = np.argsort(-s, kind="stable")
    return query, [docs[i]["_id"] for i in order], s[order], {x["_id"]: x for x in docs}


def test_index_dir_written(built):
    idx = built.cwd / "idx"
    assert json.loads((idx / "manifest.json").read_text(encoding="utf-8"))
    assert list(idx.rglob("ids.json")), "no ids.json in the index directory"


def test_index_dir_modes_follow_umask(built):
    assert_user_modes(built.cwd / "idx")
    assert not [p.name for p in built.cwd.iterdir() if p.name.startswith(".idx") or p.name.endswith(".tmp")]


def test_search_json_ranks_and_text(built, expected):
    query, ids, scores, by_id = expected
    res = built.run("search", "idx", query, "--top-k", "5", "--json")
    hits = json.loads(res.stdout)
    assert [h["id"] for h in hits] == ids[:5]
    assert [h["rank"] for h in hits] == [1, 2, 3, 4, 5]
    np.testing.assert_allclose([h["score"] for h in hits], scores[:5], atol=1e-4)
    for h in hits:  # the hit shows the document, not only its id
        text = by_id[h["id"]]["text"]
        assert any(isinstance(v, str) and text[:80] in v for v in h.values()), f"no document text in hit {h}"


def test_search_table(built, expected):
    query, ids, _, by_id = expected
    res = built.run("search", "idx", query, "-k", "3")
    lines = [ln for ln in res.stdout.splitlines() if ln.strip()]
    assert lines[0].split()[:2] == ["rank", "id"] and "score" in lines[0].split()
    rows = lines[2:]
    assert len(rows) == 3
    assert [r.split()[1] for r in rows] == ids[:3]
    # the table shows (the start of) each document's title or text
    for r, doc_id in zip(rows, ids[:3]):
        doc = by_id[doc_id]
        assert (doc["title"][:20] in r) or (doc["text"][:20] in r), f"no document text in row {r!r}"


def test_search_missing_index_is_one_line_error(built):
    name_only(built)
    res = built.run("search", "no-such-index", "a query", check=False)
    assert_clean_error(res, "no-such-index")


def test_index_build_refuses_non_index_dir(built):
    name_only(built)
    (built.cwd / "notes").mkdir(exist_ok=True)
    (built.cwd / "notes" / "keep.txt").write_text("mine", encoding="utf-8")
    res = built.run("index", "build", "-m", built.model, "--corpus", "scifact/corpus.jsonl", "--out", "notes",
                    "--no-progress", check=False)  # fmt: skip
    assert_clean_error(res, "notes")
    assert (built.cwd / "notes" / "keep.txt").read_text(encoding="utf-8") == "mine"


@pytest.mark.skipif(
    importlib.util.find_spec("pymilvus") is None or importlib.util.find_spec("milvus_lite") is None,
    reason="pymilvus / milvus-lite are not installed",
)
def test_store_build_then_search_in_fresh_processes(built, expected):
    """``index build --store docs.db`` then ``search --store docs.db``: a relative Milvus Lite file, as typed."""
    query, ids, scores, _ = expected
    res = built.run("index", "build", "-m", built.model, "--corpus", "scifact/corpus.jsonl", "--store", "docs.db",
                    "--no-progress")  # fmt: skip
    assert "indexed" in res.stdout
    hits = json.loads(built.run("search", "--store", "docs.db", query, "--top-k", "5", "--json").stdout)
    assert [h["id"] for h in hits] == ids[:5]
    np.testing.assert_allclose([h["score"] for h in hits], scores[:5], atol=1e-4)
