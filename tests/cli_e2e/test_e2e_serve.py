"""``flagembed serve`` in a subprocess on a free loopback port -> flagembed's client and the ``openai`` client."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time

import numpy as np
import pytest
from e2e_helpers import FLAGEMBED

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytestmark = pytest.mark.slow

KEY = "e2e-secret"
TEXTS = ["hello world", "Statins reduce LDL cholesterol."]
DOCS = ["a virus is a small cell", "the city is big and old", "blood cells carry data"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(ws, tiny_cross_encoder):
    from flagembed.serve import FlagEmbedClient

    shutil.copytree(tiny_cross_encoder, ws.cwd / "models" / "ce", dirs_exist_ok=True)
    port = _free_port()
    log = open(ws.cwd / "serve.log", "w+", encoding="utf-8")
    proc = subprocess.Popen(
        [str(FLAGEMBED), "serve", "--model", ws.model, "--reranker", "models/ce", "--port", str(port),
         "--api-key", KEY, "--device", "cpu"],
        cwd=ws.cwd, env=ws.env, stdout=log, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    client = FlagEmbedClient(url, api_key=KEY, timeout=30)
    try:
        while True:
            if proc.poll() is not None:
                log.seek(0)
                pytest.fail(f"flagembed serve exited {proc.returncode}:\n{log.read()[-4000:]}", pytrace=False)
            try:
                if client.health():
                    break
            except Exception:  # noqa: BLE001 - not listening yet
                pass
            if time.monotonic() > deadline:
                log.seek(0)
                pytest.fail(f"flagembed serve not ready after 180 s:\n{log.read()[-4000:]}", pytrace=False)
            time.sleep(0.5)
        yield url, client, proc
    finally:
        client.close()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()


def _served_name(url: str) -> str:
    import httpx

    resp = httpx.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {KEY}"}, timeout=30)
    resp.raise_for_status()
    return resp.json()["data"][0]["id"]


def test_served_name(server, ws):
    url, _, _ = server
    assert _served_name(url) == ("all-MiniLM-L6-v2" if ws.kind == "name" else "x")


def test_flagembed_client_embed(server, local_embedder):
    _, client, _ = server
    np.testing.assert_allclose(client.embed(TEXTS), local_embedder.encode(TEXTS), atol=1e-5)
    q = client.embed(TEXTS[:1], input_type="query")
    np.testing.assert_allclose(q, local_embedder.encode_queries(TEXTS[:1]), atol=1e-5)


def test_openai_client(server, local_embedder):
    pytest.importorskip("openai")
    from flagembed.serve import openai_client

    url, _, _ = server
    oa = openai_client(url, api_key=KEY)
    name = _served_name(url)
    resp = oa.embeddings.create(model=name, input=TEXTS)
    got = np.array([d.embedding for d in resp.data], dtype=np.float32)
    np.testing.assert_allclose(got, local_embedder.encode(TEXTS), atol=1e-5)
    short = oa.embeddings.create(model=name, input="hello world", dimensions=128)
    vec = np.array(short.data[0].embedding)
    assert vec.shape == (128,) and abs(np.linalg.norm(vec) - 1) < 1e-4
    np.testing.assert_allclose(vec, local_embedder.encode("hello world", truncate_dim=128), atol=1e-5)


def test_rerank_endpoint(server, ws):
    from flagembed import Reranker

    _, client, _ = server
    want = Reranker(str(ws.cwd / "models" / "ce"), device="cpu").compute_score([("what is a virus", d) for d in DOCS])
    ranked = client.rerank("what is a virus", DOCS, top_n=2)
    order = list(np.argsort(-np.asarray(want), kind="stable")[:2])
    assert [i for i, _ in ranked] == order
    np.testing.assert_allclose([s for _, s in ranked], [want[i] for i in order], atol=1e-4)


def test_auth_required(server):
    from flagembed.serve import FlagEmbedClient, ServeError

    url, _, _ = server
    with FlagEmbedClient(url, api_key="wrong") as bad, pytest.raises(ServeError) as err:
        bad.embed(TEXTS)
    assert err.value.status == 401


def test_sigterm_stops_cleanly(server, ws):
    """SIGTERM shuts the server down gracefully (uvicorn re-raises the signal after its shutdown, hence -15)."""
    _, _, proc = server
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=40) in (0, -signal.SIGTERM)
    log = (ws.cwd / "serve.log").read_text(encoding="utf-8")
    assert "shutdown complete" in log.lower() and "Traceback" not in log, log[-3000:]
