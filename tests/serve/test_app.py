"""The FastAPI app through TestClient: schemas, parity with the in-process models, limits, auth, errors."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
from fastapi.testclient import TestClient
from serve_fakes import POISON, FakeM3, FakeReranker

from flagembed.serve import ApiKeys, BatchingConfig, Limits, create_app

TEXTS = ["the protein gene study", "what is dense retrieval", "a", "cancer patients treatment risk " * 3]


@pytest.fixture()
def client(dense_host):
    with TestClient(create_app(dense_host, api_keys=ApiKeys(use_env=False))) as c:
        yield c


@pytest.fixture()
def m3_client(m3_host):
    with TestClient(create_app(m3_host, api_keys=ApiKeys(use_env=False))) as c:
        yield c


def _err(resp, status):
    assert resp.status_code == status, resp.text
    body = resp.json()["error"]
    assert body["message"] and body["type"]
    return body["message"]


def test_embeddings_equal_in_process_embedder(client, tiny_embedder):
    resp = client.post("/v1/embeddings", json={"input": TEXTS, "model": "tiny-bert"})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    got = np.array([d["embedding"] for d in body["data"]], dtype=np.float32)
    want = tiny_embedder.encode(TEXTS)
    assert [d["index"] for d in body["data"]] == [0, 1, 2, 3]
    assert np.abs(got - want).max() <= 1e-6
    tok = tiny_embedder.tokenizer(TEXTS, truncation=True, max_length=tiny_embedder.max_length)["input_ids"]
    assert body["usage"] == {"prompt_tokens": sum(map(len, tok)), "total_tokens": sum(map(len, tok))}
    assert body["object"] == "list" and body["model"] == "tiny-bert" and body["truncated"] == 0


def test_base64_single_string_and_alias(client, tiny_embedder):
    body = client.post("/v1/embeddings", json={"input": TEXTS[0], "model": "tiny", "encoding_format": "base64"}).json()
    vec = np.frombuffer(base64.b64decode(body["data"][0]["embedding"]), dtype="<f4")
    np.testing.assert_allclose(vec, tiny_embedder.encode(TEXTS[0]), atol=1e-6)
    assert body["model"] == "tiny-bert"


def test_dimensions_and_query_instruction(client, tiny_embedder):
    body = client.post("/v1/embeddings", json={"input": TEXTS, "dimensions": 8}).json()
    got = np.array([d["embedding"] for d in body["data"]])
    assert got.shape == (4, 8)
    np.testing.assert_allclose(got, tiny_embedder.encode(TEXTS, truncate_dim=8), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    msg = _err(client.post("/v1/embeddings", json={"input": "x", "dimensions": 10_000}), 422)
    assert "10000" in msg and str(tiny_embedder.dim) in msg
    body = client.post("/v1/embeddings", json={"input": TEXTS, "input_type": "query"}).json()
    np.testing.assert_allclose(
        np.array([d["embedding"] for d in body["data"]]), tiny_embedder.encode_queries(TEXTS), atol=1e-6
    )


def test_truncation_is_reported_or_rejected(dense_host, tiny_embedder):
    long = "protein " * 100
    app = create_app(dense_host, limits=Limits(max_input_tokens=16), api_keys=ApiKeys(use_env=False))
    with TestClient(app) as c:
        body = c.post("/v1/embeddings", json={"input": [long, "short"]}).json()
        assert body["truncated"] == 1
        np.testing.assert_allclose(body["data"][0]["embedding"], tiny_embedder.encode(long, max_length=16), atol=1e-6)
        assert body["usage"]["prompt_tokens"] == 16 + 3
        msg = _err(c.post("/v1/embeddings", json={"input": ["ok", long], "truncate": False}), 413)
        assert "input[1]" in msg and "max_input_tokens=16" in msg
        assert c.get("/info").json()["limits"]["max_input_tokens"] == 16


@pytest.mark.parametrize(
    ("payload", "needle"),
    [
        ({"input": 5}, "input"),
        ({"input": []}, "must not be empty"),
        ({"input": ["ok", 3]}, "input[1]"),
        ({"input": [[1, 2, 3]]}, "token id"),
        ({"input": ["ok", None]}, "input[1]"),
        ({"input": "x", "encoding_format": "hex"}, "encoding_format"),
        ({"input": "x", "dimensions": 0}, "dimensions"),
        ({"model": "tiny-bert"}, "input"),
    ],
)
def test_bad_input_is_422_naming_the_field(client, payload, needle):
    assert needle in _err(client.post("/v1/embeddings", json=payload), 422)


def test_unknown_model_is_404(client):
    msg = _err(client.post("/v1/embeddings", json={"input": "x", "model": "gpt-9"}), 404)
    assert "gpt-9" in msg and "tiny-bert" in msg


def test_payload_and_input_count_limits(dense_host):
    app = create_app(dense_host, limits=Limits(max_payload_bytes=1000, max_inputs=3), api_keys=ApiKeys(use_env=False))
    with TestClient(app) as c:
        msg = _err(c.post("/v1/embeddings", json={"input": "x" * 2000}), 413)
        assert "max_payload_bytes=1000" in msg
        chunked = c.post(
            "/v1/embeddings",
            content=iter([b'{"input": "', b"y" * 1500, b'"}']),
            headers={"content-type": "application/json"},
        )
        assert "max_payload_bytes" in _err(chunked, 413)
        msg = _err(c.post("/v1/embeddings", json={"input": ["a"] * 4}), 413)
        assert "4 items" in msg and "max_inputs=3" in msg
        assert c.post("/v1/embeddings", json={"input": ["a"] * 3}).status_code == 200


def test_api_key(dense_host):
    app = create_app(dense_host, api_keys=ApiKeys(["k1", "s3cret"], use_env=False))
    with TestClient(app) as c:
        assert "missing" in _err(c.post("/v1/embeddings", json={"input": "x"}), 401)
        wrong = c.post("/v1/embeddings", json={"input": "x"}, headers={"Authorization": "Bearer nope"})
        assert "invalid" in _err(wrong, 401) and "nope" not in wrong.text
        assert _err(c.get("/info", headers={"Authorization": "Basic s3cret"}), 401)
        ok = c.post("/v1/embeddings", json={"input": "x"}, headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200
        assert c.get("/health").status_code == 200  # liveness stays open
        bad_json = c.post("/v1/embeddings", content=b"{nope", headers={"content-type": "application/json"})
        assert bad_json.status_code == 401  # auth is checked before the body is parsed


def test_api_key_from_env(dense_host, monkeypatch):
    monkeypatch.setenv("FLAGEMBED_API_KEY", "envkey,other")
    with TestClient(create_app(dense_host)) as c:
        assert c.get("/v1/models").status_code == 401
        assert c.get("/v1/models", headers={"Authorization": "Bearer other"}).status_code == 200


def test_refused_requests_wait_reject_delay_before_their_answer(dense_host):
    import time

    app = create_app(dense_host, limits=Limits(reject_delay_s=0.3), api_keys=ApiKeys(use_env=False))
    with TestClient(app) as c:
        t0 = time.perf_counter()
        assert c.post("/v1/embeddings", json={"input": 7}).status_code == 422
        refused = time.perf_counter() - t0
        t0 = time.perf_counter()
        assert c.post("/v1/embeddings", json={"input": "fine"}).status_code == 200
        served = time.perf_counter() - t0
        assert c.get("/info").json()["limits"]["reject_delay_s"] == 0.3
    assert refused >= 0.3 and served < 0.3


def test_survives_1000_malformed_requests(dense_host, tiny_embedder):
    app = create_app(dense_host, limits=Limits(reject_delay_s=0), api_keys=ApiKeys(use_env=False))
    with TestClient(app) as client:
        _malformed(client, tiny_embedder)


def _malformed(client, tiny_embedder):
    bad = [
        b"{nope",
        b"[]",
        b'{"input": 7}',
        b'{"input": []}',
        b'{"input": [1.5]}',
        b'{"input": {"a": 1}}',
        b'{"input": "x", "dimensions": -3}',
        b'{"input": "x", "model": "missing"}',
        b"\xff\xfe\x00",
        b"",
    ]
    statuses = set()
    for i in range(1000):
        r = client.post("/v1/embeddings", content=bad[i % len(bad)], headers={"content-type": "application/json"})
        statuses.add(r.status_code)
        assert "error" in r.json()
    assert statuses <= {404, 422}
    body = client.post("/v1/embeddings", json={"input": TEXTS}).json()
    np.testing.assert_allclose([d["embedding"] for d in body["data"]], tiny_embedder.encode(TEXTS), atol=1e-6)
    assert client.get("/health").json() == {"status": "ok"}


def test_models_info_metrics_openapi(client):
    models = client.get("/v1/models").json()
    assert [m["id"] for m in models["data"]] == ["tiny-bert"]
    info = client.get("/info").json()
    assert info["limits"]["max_payload_bytes"] == 2 * 1024 * 1024 and info["limits"]["max_inputs"] == 512
    assert info["model"]["dim"] == 32 and info["model"]["kind"] == "dense" and info["batching"]["enabled"]
    client.post("/v1/embeddings", json={"input": ["a", "b"]})
    client.post("/v1/embeddings", json={"input": 3})
    text = client.get("/metrics").text
    assert 'flagembed_requests_total{route="/v1/embeddings",status="200"}' in text
    assert 'flagembed_requests_total{route="/v1/embeddings",status="422"}' in text
    assert "flagembed_batch_items_count" in text and "flagembed_queue_depth" in text
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/embeddings", "/v1/rerank", "/v1/embeddings/sparse", "/v1/embeddings/multivector"} <= set(paths)
    assert _err(client.get("/v1/nothing"), 404)


def test_sparse_endpoint_matches_model(m3_client, m3_host):
    fake: FakeM3 = m3_host.model
    body = m3_client.post("/v1/embeddings/sparse", json={"input": TEXTS[:2], "return_tokens": True}).json()
    tok = fake.tokenizer
    for d, text in zip(body["data"], TEXTS[:2]):
        want = fake.weights(text)
        assert d["indices"] == sorted(int(k) for k in want)
        assert d["values"] == [want[str(i)] for i in d["indices"]]
        assert d["tokens"] == [tok.decode([i]) for i in d["indices"]]
        assert d["object"] == "sparse_embedding"


def test_multivector_endpoint_matches_model(m3_client, m3_host):
    fake: FakeM3 = m3_host.model
    for fmt in ("float", "base64"):
        body = m3_client.post("/v1/embeddings/multivector", json={"input": TEXTS, "encoding_format": fmt}).json()
        for d, text in zip(body["data"], TEXTS):
            want = fake.colbert(text)
            got = d["embedding"]
            if fmt == "base64":
                got = np.frombuffer(base64.b64decode(got), dtype="<f4").reshape(d["shape"])
            assert d["shape"] == list(want.shape)
            np.testing.assert_array_equal(np.asarray(got, dtype=np.float32), want)


def test_m3_dense_and_dense_only_model(m3_client, m3_host, client):
    body = m3_client.post("/v1/embeddings", json={"input": TEXTS}).json()
    got = np.array([d["embedding"] for d in body["data"]], dtype=np.float32)
    np.testing.assert_array_equal(got[1], m3_host.model.dense(TEXTS[1]))
    assert "dimensions" in _err(m3_client.post("/v1/embeddings", json={"input": "x", "dimensions": 2}), 422)
    assert "M3" in _err(client.post("/v1/embeddings/sparse", json={"input": "x"}), 422)
    assert "reranker" in _err(client.post("/v1/rerank", json={"query": "q", "documents": ["d"]}), 404)


def test_rerank_endpoint(m3_client):
    docs = ["cancer treatment", {"text": "the protein gene"}, "protein gene study of cancer", "dark city"]
    q = "protein gene cancer"
    req = {"query": q, "documents": docs, "top_n": 3, "model": "fake-reranker"}
    body = m3_client.post("/v1/rerank", json=req).json()
    texts = [d if isinstance(d, str) else d["text"] for d in docs]
    scores = [FakeReranker.score(q, t) for t in texts]
    want = sorted(range(4), key=lambda i: -scores[i])[:3]
    assert [r["index"] for r in body["results"]] == want
    assert [r["relevance_score"] for r in body["results"]] == pytest.approx([scores[i] for i in want])
    assert body["results"][0]["document"] == {"text": texts[want[0]]}
    assert body["usage"]["total_tokens"] > 0 and body["model"] == "fake-reranker"
    plain = m3_client.post("/v1/rerank", json={"query": q, "documents": texts, "return_documents": False}).json()
    assert len(plain["results"]) == 4 and "document" not in plain["results"][0]
    assert "documents" in _err(m3_client.post("/v1/rerank", json={"query": q, "documents": []}), 422)
    assert _err(m3_client.post("/v1/rerank", json={"query": q, "documents": texts, "model": "x"}), 404)
    assert _err(m3_client.post("/v1/rerank", json={"query": q, "documents": [POISON]}), 422)
    assert m3_client.post("/v1/rerank", json={"query": q, "documents": texts}).status_code == 200


def test_model_error_fails_only_its_request(m3_client):
    r = m3_client.post("/v1/embeddings/sparse", json={"input": [f"a {POISON}"]})
    assert "poisoned" in _err(r, 422)
    assert m3_client.post("/v1/embeddings/sparse", json={"input": ["fine"]}).status_code == 200


def test_queue_full_is_429_with_retry_after(m3_host):
    from flagembed.serve.batcher import QueueFullError

    app = create_app(m3_host, limits=Limits(max_concurrent_requests=1), api_keys=ApiKeys(use_env=False))
    with TestClient(app) as c:
        batcher = app.state.flagembed.batcher

        def full(*args, **kwargs):
            raise QueueFullError("1 requests are already queued; the limit is max_concurrent_requests")

        batcher.submit = full
        r = c.post("/v1/embeddings", json={"input": "x"})
        assert "max_concurrent_requests" in _err(r, 429)
        assert r.headers["retry-after"] == "1"


def test_cors_off_by_default_and_on_when_asked(dense_host):
    with TestClient(create_app(dense_host, api_keys=ApiKeys(use_env=False))) as c:
        r = c.get("/health", headers={"Origin": "http://evil.example"})
        assert "access-control-allow-origin" not in r.headers
    app = create_app(dense_host, api_keys=ApiKeys(use_env=False), cors_origins=["http://app.example"])
    with TestClient(app) as c:
        r = c.get("/health", headers={"Origin": "http://app.example"})
        assert r.headers["access-control-allow-origin"] == "http://app.example"


def test_batching_disabled_gives_same_result(dense_host, tiny_embedder):
    app = create_app(dense_host, batching=BatchingConfig(enabled=False), api_keys=ApiKeys(use_env=False))
    with TestClient(app) as c:
        body = c.post("/v1/embeddings", json={"input": TEXTS}).json()
        assert c.get("/info").json()["batching"]["enabled"] is False
    np.testing.assert_allclose([d["embedding"] for d in body["data"]], tiny_embedder.encode(TEXTS), atol=1e-6)
    assert json.loads(json.dumps(body))  # plain JSON


def _raw(c, path, payload, **kw):
    """POST ``payload`` as ASCII JSON (``\\ud800`` stays an escape; httpx's json= cannot encode it)."""
    return c.post(path, content=json.dumps(payload).encode(), headers={"content-type": "application/json"}, **kw)


def test_rerank_joins_title_and_text(m3_client):
    docs = [{"title": "protein gene", "text": "study"}, "cancer", {"text": "gene"}]
    body = m3_client.post("/v1/rerank", json={"query": "protein gene study", "documents": docs}).json()
    scores = {r["index"]: r["relevance_score"] for r in body["results"]}
    assert scores[0] == pytest.approx(FakeReranker.score("protein gene study", "protein gene study"))
    assert {r["index"]: r["document"] for r in body["results"]}[0] == docs[0]


def test_401_is_counted_under_its_route(dense_host):
    app = create_app(dense_host, api_keys=ApiKeys(["k"], use_env=False))
    with TestClient(app) as c:
        assert c.post("/v1/embeddings", json={"input": "x"}).status_code == 401
        assert c.get("/v1/nothing", headers={"Authorization": "Bearer k"}).status_code == 404
        text = c.get("/metrics", headers={"Authorization": "Bearer k"}).text
    assert 'flagembed_requests_total{route="/v1/embeddings",status="401"} 1.0' in text
    assert 'route="unmatched",status="404"' in text and 'route="unmatched",status="401"' not in text


def test_multivector_output_bound_after_compute(m3_host):
    fake: FakeM3 = m3_host.model
    rows = sum(fake.colbert(t).shape[0] for t in TEXTS)
    limit = rows * fake.dim - 1
    app = create_app(m3_host, limits=Limits(max_multivector_values=limit), api_keys=ApiKeys(use_env=False))
    with TestClient(app) as c:
        msg = _err(c.post("/v1/embeddings/multivector", json={"input": TEXTS}), 413)
        assert f"{rows} vectors x {fake.dim} dims" in msg and f"max_multivector_values={limit}" in msg
        assert c.post("/v1/embeddings/multivector", json={"input": TEXTS[:1]}).status_code == 200
        fake.colbert_dim = fake.dim  # a model that states its ColBERT size is refused before it runs
        calls = len(fake.calls)
        assert "max_multivector_values" in _err(c.post("/v1/embeddings/multivector", json={"input": TEXTS}), 413)
        assert len(fake.calls) == calls
        assert c.get("/info").json()["limits"]["max_multivector_values"] == limit
        many = _err(c.post("/v1/embeddings/multivector", json={"input": [TEXTS[3]] * 500}), 413)
        assert "at least" in many and len(fake.calls) == calls  # refused after reading a few of the 500 texts


@pytest.mark.parametrize(
    ("path", "payload", "needle"),
    [
        ("/v1/embeddings", {"input": ["ok", "bad \ud800"]}, "input[1]"),
        ("/v1/embeddings", {"input": "\udfff"}, "input has a lone"),
        ("/v1/embeddings/sparse", {"input": ["a", "b", "\ud800x"]}, "input[2]"),
        ("/v1/embeddings/multivector", {"input": ["\ud83d"]}, "input[0]"),
        ("/v1/rerank", {"query": "q", "documents": ["d", "\ud800"]}, "documents[1]"),
        ("/v1/rerank", {"query": "q", "documents": [{"text": "t", "title": "\ud800"}]}, "documents[0].title"),
        ("/v1/rerank", {"query": "\ud800", "documents": ["d"]}, "query"),
        ("/v1/embeddings", {"input": "x", "model": "\ud800"}, "model"),
        ("/v1/embeddings", {"input": "x", "user": {"\ud800": ["\udc00"]}}, "a key in user"),
    ],
)
def test_lone_surrogates_are_422_before_the_model(m3_host, path, payload, needle):
    with TestClient(create_app(m3_host, api_keys=ApiKeys(use_env=False))) as c:
        r = _raw(c, path, payload)
        assert needle in _err(r, 422) and "surrogate" in r.text
        assert m3_host.model.calls == [] and m3_host.reranker.calls == []
        clean = json.loads(json.dumps(payload).replace("\\ud", "d"))
        want = 404 if "model" in payload else 422 if "user" in payload else 200  # unknown model; user not a string
        assert _raw(c, path, clean).status_code == want


def test_empty_and_non_ascii_keys_are_refused(monkeypatch):
    for bad in ([""], ["  "], ["ok", ""], ["clé"], ["two words"]):
        with pytest.raises(ValueError, match="API key"):
            ApiKeys(bad, use_env=False)
    for env in ("", ",", "a,,b", " "):
        monkeypatch.setenv("FLAGEMBED_API_KEY", env)
        with pytest.raises(ValueError, match="FLAGEMBED_API_KEY item"):
            ApiKeys()
    monkeypatch.setenv("FLAGEMBED_API_KEY", " a , b ")
    assert len(ApiKeys()) == 2


def test_docs_need_the_key_and_duplicate_authorization_is_rejected(dense_host):
    with TestClient(create_app(dense_host, api_keys=ApiKeys(["k1", "k2"], use_env=False))) as c:
        for path in ("/docs", "/redoc", "/openapi.json"):
            assert c.get(path).status_code == 401, path
            assert c.get(path, headers={"Authorization": "Bearer k1"}).status_code == 200, path
        two = [("authorization", "Bearer k1"), ("authorization", "Bearer k2")]
        r = c.post("/v1/embeddings", json={"input": "x"}, headers=two)
        assert "Authorization headers" in _err(r, 400)
        bad = c.post("/v1/embeddings", json={"input": "x"}, headers=[("authorization", "Bearer bad"), *two[:1]])
        assert bad.status_code == 400  # not "last header wins"
    with TestClient(create_app(dense_host, api_keys=ApiKeys(use_env=False))) as c:
        assert c.get("/docs").status_code == 200  # no key set: docs stay open


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b'{"input": "x", "dimensions": ' + b"9" * 5000 + b"}", "digits"),
        (b'{"input": "\xff\xfe"}', "UTF-8"),
        (b'{"input": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", "nested"),
        (b"\xff\xfe\x00", "UTF-8"),
    ],
)
def test_undecodable_json_is_a_json_422(client, body, needle):
    r = client.post("/v1/embeddings", content=body, headers={"content-type": "application/json"})
    assert needle in _err(r, 422)
    assert client.post("/v1/embeddings", json={"input": "fine"}).status_code == 200


def test_info_reports_connection_limits(dense_host):
    from flagembed.serve import ConnectionLimits

    conn = ConnectionLimits(header_timeout_s=3, body_timeout_s=4, keep_alive_s=2, max_connections=9)
    with TestClient(create_app(dense_host, api_keys=ApiKeys(use_env=False), connections=conn)) as c:
        info = c.get("/info").json()["connections"]
    assert info["header_timeout_s"] == 3 and info["body_timeout_s"] == 4 and info["max_connections"] == 9
    with pytest.raises(ValueError, match="body_timeout_s must be > 0"):
        ConnectionLimits(body_timeout_s=0)
