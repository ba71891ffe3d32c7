"""ModelHost and load_host with the real M3Embedder and Reranker on tiny random checkpoints."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tiny_m3
import tiny_models
from fastapi.testclient import TestClient

from flagembed.serve import ApiKeys, Limits, create_app, load_host
from flagembed.serve.backends import detect_kind

TEXTS = ["the protein gene study", "what is dense retrieval", "cancer patients treatment risk " * 4]


@pytest.fixture(scope="module")
def m3_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_m3.build_m3(tmp_path_factory.mktemp("serve") / "tiny-m3")


@pytest.fixture(scope="module")
def reranker_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_models.build_bert(tmp_path_factory.mktemp("serve") / "tiny-reranker", classifier=True)


@pytest.fixture(scope="module")
def real_host(m3_path, reranker_path):
    return load_host(str(m3_path), reranker=str(reranker_path), device="cpu", dtype="fp32")


def test_detect_kind(m3_path, tiny_bert):
    assert detect_kind(str(m3_path), m3_path) == "m3"
    assert detect_kind(str(tiny_bert), tiny_bert) == "dense"
    assert detect_kind("BAAI/bge-m3", None) == "m3"


def test_load_host_names_and_kinds(real_host, tiny_bert):
    assert real_host.kind == "m3" and real_host.name == "tiny-m3" and real_host.reranker_name == "tiny-reranker"
    assert type(real_host.model).__name__ == "M3Embedder" and type(real_host.reranker).__name__ == "Reranker"
    dense = load_host(str(tiny_bert), served_name="mine", device="cpu")
    assert dense.kind == "dense" and dense.name == "mine" and dense.aliases == ("tiny-bert",)  # no folder path
    with pytest.raises(ValueError, match="valid: auto, dense, m3"):
        load_host(str(tiny_bert), kind="colbert")  # type: ignore[arg-type]


def test_real_m3_and_reranker_through_the_app(real_host):
    m3 = real_host.model
    want = m3.encode(TEXTS, return_dense=True, return_sparse=True, return_colbert_vecs=True)
    with TestClient(create_app(real_host, api_keys=ApiKeys(use_env=False))) as c:
        dense = c.post("/v1/embeddings", json={"input": TEXTS}).json()
        np.testing.assert_allclose([d["embedding"] for d in dense["data"]], want["dense_vecs"], atol=1e-6)

        sparse = c.post("/v1/embeddings/sparse", json={"input": TEXTS, "return_tokens": True}).json()
        for d, weights in zip(sparse["data"], want["lexical_weights"]):
            assert d["indices"] == sorted(int(k) for k in weights)
            np.testing.assert_allclose(d["values"], [float(weights[str(i)]) for i in d["indices"]], atol=1e-6)
            assert d["tokens"] == list(m3.convert_id_to_token({str(i): 0 for i in d["indices"]}))

        multi = c.post("/v1/embeddings/multivector", json={"input": TEXTS}).json()
        for d, vecs in zip(multi["data"], want["colbert_vecs"]):
            assert d["shape"] == list(vecs.shape)
            np.testing.assert_allclose(d["embedding"], vecs, atol=1e-6)

        docs = ["protein gene", "dark city water", "cancer risk study"]
        rr = c.post("/v1/rerank", json={"query": "gene study", "documents": docs}).json()
        scores = real_host.reranker.compute_score([("gene study", d) for d in docs])
        assert [r["index"] for r in rr["results"]] == list(np.argsort(-np.asarray(scores), kind="stable"))
        np.testing.assert_allclose(
            [r["relevance_score"] for r in rr["results"]], sorted(scores, reverse=True), atol=1e-6
        )
        info = c.get("/info").json()["model"]
        assert info["outputs"] == ["dense", "sparse", "multivector"] and info["reranker"]["name"] == "tiny-reranker"
        assert [m["id"] for m in c.get("/v1/models").json()["data"]] == ["tiny-m3", "tiny-reranker"]


def test_names_not_paths_in_errors_and_info(real_host, m3_path):
    with TestClient(create_app(real_host, api_keys=ApiKeys(use_env=False))) as c:
        missing = c.post("/v1/embeddings", json={"input": "x", "model": "nope"})
        assert missing.status_code == 404 and "tiny-m3" in missing.text
        for text in (missing.text, c.get("/info").text, c.get("/v1/models").text):
            assert str(m3_path.parent) not in text
        assert c.post("/v1/embeddings", json={"input": "x", "model": str(m3_path)}).status_code == 404


def test_rerank_titles_are_joined_like_the_cli(real_host):
    docs = [{"title": "protein gene", "text": "a study"}, "dark city water", {"text": "cancer risk"}]
    want = {r.index: r.score for r in real_host.reranker.rerank("gene study", docs)}  # what `flagembed rerank` runs
    with TestClient(create_app(real_host, api_keys=ApiKeys(use_env=False))) as c:
        body = c.post("/v1/rerank", json={"query": "gene study", "documents": docs}).json()
    got = {r["index"]: r["relevance_score"] for r in body["results"]}
    assert got == pytest.approx(want, abs=1e-6)
    untitled = real_host.reranker.compute_score([("gene study", "a study")])[0]
    assert abs(got[0] - untitled) > 1e-6  # the title changed the score
    echoed = {r["index"]: r["document"] for r in body["results"]}
    assert echoed[0] == docs[0] and echoed[1] == {"text": "dark city water"} and echoed[2] == {"text": "cancer risk"}


def test_multivector_output_bound_is_checked_before_the_model_runs(real_host, monkeypatch):
    m3 = real_host.model
    calls = []
    real_encode = m3.encode
    monkeypatch.setattr(m3, "encode", lambda *a, **k: calls.append(1) or real_encode(*a, **k))
    vectors = sum(len(ids) - 1 for ids in real_host.count_tokens(TEXTS, real_host.max_length(None)).ids)
    exact = vectors * m3.colbert_dim
    app = create_app(real_host, limits=Limits(max_multivector_values=exact - 1), api_keys=ApiKeys(use_env=False))
    with TestClient(app) as c:
        r = c.post("/v1/embeddings/multivector", json={"input": TEXTS})
        assert r.status_code == 413 and r.json()["error"]["code"] == "output_too_large", r.text
        assert f"max_multivector_values={exact - 1}" in r.text and not calls
        assert c.get("/info").json()["limits"]["max_multivector_values"] == exact - 1
    app = create_app(real_host, limits=Limits(max_multivector_values=exact), api_keys=ApiKeys(use_env=False))
    with TestClient(app) as c:
        body = c.post("/v1/embeddings/multivector", json={"input": TEXTS, "encoding_format": "base64"}).json()
    assert sum(d["shape"][0] * d["shape"][1] for d in body["data"]) == exact and calls


FLOOR_TEXTS = [
    "a b c",
    "don't stop-me now!! (really)",
    "中文 文本 没有 空格 日本語のテキスト",
    "e\u0301te\u0301 cafe\u0301 naïve Ærøskøbing",
    "\u200b \u200b x \u200b",
    "_ __ ___ - -- ...",
    "123 4.5 6,7 1e-9 0x1F",
    "emoji \U0001f600 \U0001f600\U0001f600 ok",
    "  spaced   out \t\n tabs  ",
    "\x00 \x07 control \x1f chars",
    "protein gene " * 80,
]


@pytest.mark.parametrize("which", ["m3", "bert"])
def test_word_floor_never_exceeds_real_token_counts(real_host, tiny_bert, which):
    """The tokenizer-free floor the multi-vector bound uses must hold for the tokenizers we serve."""
    from transformers import AutoTokenizer

    from flagembed.serve.app import _WORD

    tok = real_host._tokenizer if which == "m3" else AutoTokenizer.from_pretrained(str(tiny_bert))
    max_length = 64
    ids = tok(FLOOR_TEXTS, truncation=True, max_length=max_length)["input_ids"]
    for text, row in zip(FLOOR_TEXTS, ids):
        words = len(_WORD.findall(text))
        assert min(words, max_length - 1) - 1 <= len(row) - 1, (text, words, len(row))
