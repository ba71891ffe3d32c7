"""Image inputs on /v1/embeddings (OpenAI-style content parts with data URLs) equal the in-process embeddings."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import tiny_visual
from fastapi.testclient import TestClient

from flagembed.inference.visual import VisualEmbedder
from flagembed.serve import ApiKeys, Limits, create_app
from flagembed.serve.backends import ModelHost


def data_url(img) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def image_part(img) -> dict:
    return {"type": "image_url", "image_url": {"url": data_url(img)}}


@pytest.fixture(scope="module")
def visual(tiny_bert, tmp_path_factory):
    return VisualEmbedder(tiny_visual.build_visual(tiny_bert, tmp_path_factory.mktemp("vserve") / "m", seed=5))


@pytest.fixture()
def client(visual):
    host = ModelHost(name="tiny-visual", model=visual)
    app = create_app(host, api_keys=ApiKeys(use_env=False), limits=Limits(reject_delay_s=0, max_image_pixels=100_000))
    with TestClient(app) as c:
        yield c


def test_image_requests_equal_in_process(client, visual):
    imgs = [tiny_visual.draw(70), tiny_visual.draw(71)]
    body = {"input": [
        image_part(imgs[0]),
        [image_part(imgs[1]), {"type": "text", "text": "the red cell"}],
        "blue protein",
        {"type": "text", "text": "green"},
    ]}  # fmt: skip
    resp = client.post("/v1/embeddings", json=body)
    assert resp.status_code == 200, resp.text
    got = np.array([d["embedding"] for d in resp.json()["data"]], dtype=np.float32)
    items = [{"image": imgs[0]}, {"image": imgs[1], "text": "the red cell"}, "blue protein", "green"]
    want = visual.encode_items(items)
    assert np.abs(got - want).max() <= 1e-6
    usage = resp.json()["usage"]["prompt_tokens"]
    assert usage > 2 * visual.num_image_tokens
    b64 = client.post("/v1/embeddings", json={"input": [image_part(imgs[0])], "encoding_format": "base64"}).json()
    vec = np.frombuffer(base64.b64decode(b64["data"][0]["embedding"]), dtype="<f4")
    np.testing.assert_allclose(vec, want[0], atol=1e-6)


def test_image_limits_and_errors(client, visual):
    def post(inp):
        return client.post("/v1/embeddings", json={"input": inp})

    big = tiny_visual.draw(1, size=(400, 300))  # 120,000 pixels > 100,000
    resp = post([image_part(big)])
    assert resp.status_code == 413 and "max_image_pixels" in resp.json()["error"]["message"]
    broken = "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\nnope").decode()
    resp = post(["ok", {"type": "image_url", "image_url": {"url": broken}}])
    assert resp.status_code == 422 and "input[1]" in resp.json()["error"]["message"]
    resp = post([{"type": "image_url", "image_url": {"url": "http://example.com/a.png"}}])
    assert resp.status_code == 422 and "only data: URLs" in resp.json()["error"]["message"]
    resp = post([{"type": "audio", "audio": "x"}])
    assert resp.status_code == 422 and "input[0]" in resp.json()["error"]["message"]
    resp = post([[image_part(tiny_visual.draw(2)), image_part(tiny_visual.draw(3))]])
    assert resp.status_code == 422 and "more than one image" in resp.json()["error"]["message"]


def test_text_model_refuses_images(tiny_embedder):
    host = ModelHost(name="tiny-bert", model=tiny_embedder)
    with TestClient(create_app(host, api_keys=ApiKeys(use_env=False), limits=Limits(reject_delay_s=0))) as c:
        resp = c.post("/v1/embeddings", json={"input": [image_part(tiny_visual.draw(4))]})
    assert resp.status_code == 422 and "text only" in resp.json()["error"]["message"]


def test_load_host_picks_visual_embedder(tiny_bert, tmp_path):
    from flagembed.serve.backends import load_host

    folder = tiny_visual.build_visual(tiny_bert, tmp_path / "vis", seed=6)
    host = load_host(str(folder), device="cpu")
    assert isinstance(host.model, VisualEmbedder) and host.kind == "dense"
