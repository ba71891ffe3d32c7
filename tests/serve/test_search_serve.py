"""``POST /v1/search``: the served index (in-process or Milvus Lite) answers as the searcher does in-process."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import tiny_models
from fastapi.testclient import TestClient

from flagembed.index import HybridSearcher
from flagembed.serve import ApiKeys, Limits, SearchHost, create_app, load_search

DOCS = [{"title": f"doc {i}", "text": " ".join(tiny_models.WORDS[i : i + 6]), "year": 2000 + i} for i in range(24)]
IDS = [f"d{i:02d}" for i in range(len(DOCS))]
QUERIES = [" ".join(tiny_models.WORDS[i : i + 3]) for i in (0, 5, 11)]


def _client(host, search, **limits):
    app = create_app(host, api_keys=ApiKeys(use_env=False), limits=Limits(reject_delay_s=0, **limits), search=search)
    return TestClient(app)


@pytest.fixture(scope="module")
def index_dir(tiny_embedder, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("served") / "idx"
    HybridSearcher.build(tiny_embedder, DOCS, IDS).save(out)
    return out


@pytest.fixture()
def served(dense_host, index_dir):
    search = load_search(str(index_dir), device="cpu")
    with _client(dense_host, search, max_inputs=4) as c:
        yield c, search


def test_search_equals_the_searcher_in_process(served):
    client, search = served
    want = search.searcher.search(QUERIES, top_k=5)
    r = client.post("/v1/search", json={"query": QUERIES, "top_k": 5})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [[h["id"] for h in d["results"]] for d in body["data"]] == want.ids
    got = [[h["score"] for h in d["results"]] for d in body["data"]]
    np.testing.assert_allclose(np.array(got), np.array(want.scores), atol=1e-6)
    first = body["data"][0]["results"][0]
    assert first["document"] == want.docs[0][0]  # title, text and metadata come back
    assert body["index"]["documents"] == len(DOCS) and body["index"]["kind"] == "index"


def test_one_query_string_and_no_documents(served):
    client, search = served
    r = client.post("/v1/search", json={"query": QUERIES[1], "top_k": 3, "return_documents": False})
    assert r.status_code == 200
    hits = r.json()["data"][0]["results"]
    assert [h["id"] for h in hits] == search.searcher.search(QUERIES[1], top_k=3).ids[0]
    assert all("document" not in h for h in hits)


@pytest.mark.parametrize(
    ("payload", "status", "needle"),
    [
        ({"query": ["ok", "  "]}, 422, "query[1] is empty"),
        ({"query": []}, 422, "query must not be empty"),
        ({"query": ["a"] * 5}, 413, "max_inputs=4"),
        ({"query": "a", "top_k": 0}, 422, "top_k"),
        ({"query": "a", "modes": "sparse"}, 422, "sparse"),
        ({"query": "a", "filter": "year > 2001"}, 422, "filter needs a Milvus store"),
    ],
)
def test_bad_requests_get_clear_errors(served, payload, status, needle):
    client, _ = served
    r = client.post("/v1/search", json=payload)
    assert r.status_code == status, r.text
    assert needle in r.json()["error"]["message"]


def test_without_an_index_the_route_says_how_to_get_one(dense_host):
    with _client(dense_host, None) as c:
        r = c.post("/v1/search", json={"query": "a"})
        assert r.status_code == 404
        assert "--index" in r.json()["error"]["message"]
        assert c.get("/info").json()["search"] is None


def test_load_search_refuses_both_sources(index_dir):
    with pytest.raises(ValueError, match="not both"):
        load_search(str(index_dir), "x.db")
    assert load_search() is None


@pytest.mark.skipif(
    importlib.util.find_spec("pymilvus") is None or importlib.util.find_spec("milvus_lite") is None,
    reason="pymilvus / milvus-lite are not installed",
)
def test_milvus_store_is_served_with_filters(dense_host, tmp_path):
    from tiny_m3 import build_m3

    from flagembed.index.milvus import MilvusStore
    from flagembed.inference import M3Embedder

    m3 = M3Embedder(build_m3(tmp_path / "m3"), device="cpu")
    db = tmp_path / "docs.db"
    with MilvusStore.create(db, m3) as s:
        s.add(IDS, DOCS)
    search = load_search(store=str(db), device="cpu")
    assert isinstance(search, SearchHost) and search.kind == "milvus"
    want = search.searcher.search(QUERIES, top_k=5)
    want_f = search.searcher.search(QUERIES[0], top_k=5, filter='metadata["year"] >= 2010')
    with _client(dense_host, search) as c:
        body = c.post("/v1/search", json={"query": QUERIES, "top_k": 5}).json()
        assert [[h["id"] for h in d["results"]] for d in body["data"]] == want.ids
        r = c.post("/v1/search", json={"query": QUERIES[0], "top_k": 5, "filter": 'metadata["year"] >= 2010'})
        assert r.status_code == 200, r.text
        hits = r.json()["data"][0]["results"]
        assert [h["id"] for h in hits] == want_f.ids[0]
        assert all(int(h["id"][1:]) >= 10 for h in hits)
