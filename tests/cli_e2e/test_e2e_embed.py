"""``flagembed embed``: txt and jsonl files to .npy, equal to the Python Embedder's vectors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from e2e_helpers import assert_clean_error, assert_user_modes, name_only, read_corpus

TEXTS = ["Statins reduce LDL cholesterol.", "An unrelated abstract about volcanoes.", "what causes malaria?"]


def test_embed_txt(ws, local_embedder):
    (ws.cwd / "texts.txt").write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    res = ws.run("embed", "--model", ws.model, "--input", "texts.txt", "--output", "vectors.npy", "--no-progress")
    assert "vectors.npy" in res.stdout
    got = np.load(ws.cwd / "vectors.npy")
    assert got.shape == (3, 384) and got.dtype == np.float32
    np.testing.assert_allclose(got, local_embedder.encode_corpus(TEXTS), atol=1e-5)


def test_embed_output_mode_follows_umask(ws):
    if not (ws.cwd / "vectors.npy").exists():
        pytest.skip("test_embed_txt did not write vectors.npy")
    assert_user_modes(ws.cwd / "vectors.npy")


def test_embed_jsonl_title_text(ws, local_embedder):
    name_only(ws)
    docs = read_corpus(ws.cwd)[:5]
    res = ws.run("embed", "-m", ws.model, "-i", "scifact/corpus.jsonl", "-o", "corpus.npy", "--batch-size", "8")
    assert res.returncode == 0
    got = np.load(ws.cwd / "corpus.npy")
    assert got.shape[0] == len(read_corpus(ws.cwd))
    want = local_embedder.encode_corpus([{"title": d["title"], "text": d["text"]} for d in docs])
    np.testing.assert_allclose(got[:5], want, atol=1e-5)


def test_embed_jsonl_queries(ws_name, local_embedder):
    ws = ws_name
    ws.run("embed", "-m", ws.model, "-i", "scifact/queries.jsonl", "-o", "q.npy", "--queries")
    with open(ws.cwd / "scifact" / "queries.jsonl", encoding="utf-8") as f:
        queries = [json.loads(line)["text"] for line in f]
    np.testing.assert_allclose(np.load(ws.cwd / "q.npy"), local_embedder.encode_queries(queries), atol=1e-5)


def test_embed_missing_input_is_one_line_error(ws_name):
    ws = ws_name
    res = ws.run("embed", "-m", ws.model, "-i", "nope.txt", "-o", "x.npy", check=False)
    assert_clean_error(res, "nope.txt")
    assert not (ws.cwd / "x.npy").exists()
