"""A real uvicorn server on a loopback port, called with the official openai client and FlagEmbedClient."""

from __future__ import annotations

import base64
import socket
import threading
import time

import httpx
import numpy as np
import pytest
from serve_fakes import FakeM3, serve_in_thread

from flagembed.inference import Embedder
from flagembed.serve import ApiKeys, FlagEmbedClient, ModelHost, ServeError, create_app, openai_client
from flagembed.serve.server import is_loopback

WORDS = (
    "the cell gene risk study blood virus drug therapy data model query text city water fire earth air light "
    "dark red blue green big small long short new old good bad fast slow human mouse brain level role time high "
    "low method search score token vector dense sparse"
).split()[:48]
TEXTS = [
    "A cell is the basic unit of life.",
    "What is the capital of France?",
    "Mitochondria produce most of the cell's ATP." * 3,
    "short",
]


@pytest.fixture(scope="module")
def minilm(minilm_path) -> Embedder:
    return Embedder(str(minilm_path), device="cpu", dtype="fp32", show_progress=False)


def test_openai_client_parity_on_a_real_socket(minilm):
    host = ModelHost(name="all-MiniLM-L6-v2", model=minilm)
    app = create_app(host, api_keys=ApiKeys(["sk-test"], use_env=False))
    with serve_in_thread(app) as (url, _):
        client = openai_client(url, api_key="sk-test")
        want = minilm.encode(TEXTS)
        for fmt in ("float", "base64"):
            resp = client.embeddings.create(model="all-MiniLM-L6-v2", input=TEXTS, encoding_format=fmt)
            raw = [d.embedding for d in resp.data]  # asked-for base64 comes back as the string
            got = np.stack([np.frombuffer(base64.b64decode(r), "<f4") if fmt == "base64" else r for r in raw])
            assert np.abs(got - want).max() <= 1e-6, fmt
        resp = client.embeddings.create(model="all-MiniLM-L6-v2", input=TEXTS)  # the client's default: base64
        assert np.abs(np.array([d.embedding for d in resp.data]) - want).max() <= 1e-6
        assert resp.usage.prompt_tokens > 0
        resp = client.embeddings.create(model="all-MiniLM-L6-v2", input=TEXTS[0], dimensions=64)
        np.testing.assert_allclose(resp.data[0].embedding, minilm.encode(TEXTS[0], truncate_dim=64), atol=1e-6)
        assert [m.id for m in client.models.list().data] == ["all-MiniLM-L6-v2"]

        import openai

        with pytest.raises(openai.AuthenticationError):
            openai_client(url, api_key="wrong").embeddings.create(model="all-MiniLM-L6-v2", input="x")
        with pytest.raises(openai.NotFoundError, match="unknown model"):
            client.embeddings.create(model="text-embedding-3-small", input="x")
        with pytest.raises(openai.UnprocessableEntityError, match="token id"):
            client.embeddings.create(model="all-MiniLM-L6-v2", input=[[1, 2, 3]])

        with FlagEmbedClient(url, api_key="sk-test") as fc:
            np.testing.assert_allclose(fc.embed(TEXTS), want, atol=1e-6)
            np.testing.assert_allclose(fc.embed(TEXTS[1]), want[1], atol=1e-6)
            assert fc.health() and fc.info()["model"]["dim"] == 384
            with pytest.raises(ServeError) as err:
                fc.sparse(["x"])
            assert err.value.status == 422


def test_concurrent_requests_coalesce(tiny_embedder):
    host = ModelHost(name="tiny", model=tiny_embedder)
    app = create_app(host, api_keys=ApiKeys(use_env=False))
    texts = [f"protein {w} gene" for w in WORDS]  # no digits: tiny_models' vocab overflows on '##8'/'##9'
    want = tiny_embedder.encode(texts)
    with serve_in_thread(app) as (url, _):
        results: dict[int, np.ndarray] = {}

        def call(i: int) -> None:
            with FlagEmbedClient(url) as c:
                for j in range(i, 48, 8):
                    results[j] = c.embed(texts[j])

        threads = [threading.Thread(target=call, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        stats = app.state.flagembed.batcher.stats
    np.testing.assert_allclose(np.stack([results[j] for j in range(48)]), want, atol=1e-5)
    assert stats.requests == 48 and stats.batches < 48


def test_graceful_shutdown_drains_in_flight_requests(tiny_embedder):
    fake = FakeM3(tiny_embedder.tokenizer, delay=1.0)
    app = create_app(ModelHost(name="slow", model=fake, kind="m3"), api_keys=ApiKeys(use_env=False))
    out: dict[str, object] = {}
    with serve_in_thread(app) as (url, server):

        def slow() -> None:
            out["resp"] = httpx.post(f"{url}/v1/embeddings/sparse", json={"input": ["protein gene"]}, timeout=30)

        t = threading.Thread(target=slow)
        t.start()
        deadline = time.monotonic() + 10
        while not fake.calls and time.monotonic() < deadline:
            time.sleep(0.01)
        server.should_exit = True  # what SIGTERM does
        t.join(30)
    resp = out["resp"]
    assert resp.status_code == 200, resp.text
    assert resp.json()["data"][0]["indices"]
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/health", timeout=2)


def test_is_loopback():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3") and not is_loopback("example.com")


def _conn_app(tiny_embedder, **limits):
    from flagembed.serve import ConnectionLimits

    fake = FakeM3(tiny_embedder.tokenizer, delay=limits.pop("delay", 0.0))
    conn = ConnectionLimits(**limits)
    app = create_app(ModelHost(name="m", model=fake, kind="m3"), api_keys=ApiKeys(use_env=False), connections=conn)
    return app, fake


def _closed_within(sock: socket.socket, seconds: float) -> tuple[bool, bytes]:
    """Read until the server closes the socket; ``(closed_in_time, bytes_received)``."""
    sock.settimeout(seconds)
    got = b""
    try:
        while chunk := sock.recv(4096):
            got += chunk
    except TimeoutError:
        return False, got
    except ConnectionResetError:
        pass
    return True, got


def test_idle_slow_header_and_slow_body_connections_are_closed(tiny_embedder):
    app, _ = _conn_app(tiny_embedder, header_timeout_s=0.5, body_timeout_s=0.5, keep_alive_s=0.5)
    with serve_in_thread(app) as (url, _):
        port = int(url.rsplit(":", 1)[1])
        idle, slow_head, slow_body = (socket.create_connection(("127.0.0.1", port)) for _ in range(3))
        slow_head.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\n")
        slow_body.sendall(
            b"POST /v1/embeddings/sparse HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n{\"input\": "
        )
        start = time.monotonic()
        results = [_closed_within(s, 5) for s in (idle, slow_head, slow_body)]
        elapsed = time.monotonic() - start
        for s in (idle, slow_head, slow_body):
            s.close()
        assert all(closed for closed, _ in results) and elapsed < 3, (results, elapsed)
        assert b"408" in results[2][1] and b"body_timeout_s=0.5" in results[2][1]
        assert httpx.get(f"{url}/health", timeout=5).status_code == 200  # the server still serves
        info = httpx.get(f"{url}/info", timeout=5).json()["connections"]
        assert info["header_timeout_s"] == 0.5 and info["keep_alive_s"] == 0.5


def test_request_cut_at_the_shutdown_grace_gets_a_json_503(tiny_embedder):
    app, fake = _conn_app(tiny_embedder, shutdown_grace_s=0.5, delay=3.0)
    out: dict[str, object] = {}
    with serve_in_thread(app) as (url, server):

        def slow() -> None:
            out["resp"] = httpx.post(f"{url}/v1/embeddings/sparse", json={"input": ["protein gene"]}, timeout=30)

        t = threading.Thread(target=slow)
        t.start()
        deadline = time.monotonic() + 10
        while not fake.calls and time.monotonic() < deadline:
            time.sleep(0.01)
        server.should_exit = True
        t.join(30)
    resp = out["resp"]
    assert resp.status_code == 503 and resp.headers["content-type"] == "application/json", resp.text
    assert resp.json()["error"]["code"] == "shutting_down"


def test_access_log_redacts_key_like_query_parameters():
    import logging

    from flagembed.serve.server import RedactSecretsFilter, install_log_redaction

    args = ("127.0.0.1:5", "GET", "/v1/models?api_key=sk-123&x=1&Token=abc", "1.1", 401)
    record = logging.LogRecord("uvicorn.access", logging.INFO, "", 0, '%s - "%s %s HTTP/%s" %d', args, None)
    RedactSecretsFilter().filter(record)
    line = record.getMessage()
    assert "sk-123" not in line and "abc" not in line and "x=1" in line and "api_key=[redacted]" in line
    install_log_redaction()
    install_log_redaction()
    assert sum(isinstance(f, RedactSecretsFilter) for f in logging.getLogger("uvicorn.access").filters) == 1
