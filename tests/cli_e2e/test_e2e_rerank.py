"""``flagembed rerank`` with a tiny cross-encoder (trained head saved in the checkpoint) from a relative folder."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from e2e_helpers import assert_clean_error

QUERY = "what is a virus"
DOCS = ["the city is big and old", "a virus is a small cell", "blood cells carry data", "fire and water are old"]


@pytest.fixture(scope="module")
def ce_ws(ws_name, tiny_cross_encoder):
    shutil.copytree(tiny_cross_encoder, ws_name.cwd / "models" / "ce", dirs_exist_ok=True)
    (ws_name.cwd / "docs.txt").write_text("\n".join(DOCS) + "\n", encoding="utf-8")
    rows = [{"title": "t", "text": d} for d in DOCS]
    (ws_name.cwd / "docs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return ws_name


@pytest.fixture(scope="module")
def python_scores(ce_ws):
    from flagembed import Reranker

    rr = Reranker(str(ce_ws.cwd / "models" / "ce"), device="cpu")
    return rr.compute_score([(QUERY, d) for d in DOCS]), rr.compute_score([(QUERY, f"t {d}") for d in DOCS])


def test_rerank_txt_json(ce_ws, python_scores):
    res = ce_ws.run("rerank", "-m", "models/ce", "-q", QUERY, "--docs", "docs.txt", "--top-k", "3", "--json")
    hits = json.loads(res.stdout)
    want = np.asarray(python_scores[0])
    order = list(np.argsort(-want, kind="stable")[:3])
    assert [h["index"] for h in hits] == order
    assert [h["document"] for h in hits] == [DOCS[i] for i in order]
    np.testing.assert_allclose([h["score"] for h in hits], want[order], atol=1e-4)


def test_rerank_jsonl_table_normalized(ce_ws, python_scores):
    res = ce_ws.run("rerank", "-m", "models/ce", "-q", QUERY, "--docs", "docs.jsonl", "--normalize")
    rows = [ln.split() for ln in res.stdout.splitlines()[2:] if ln.strip()]
    want = 1 / (1 + np.exp(-np.asarray(python_scores[1])))
    order = list(np.argsort(-want, kind="stable"))
    assert [int(r[2]) for r in rows] == order
    np.testing.assert_allclose([float(r[1]) for r in rows], want[order], atol=1e-4)


def _names_the_head(message: str) -> bool:
    return any(word in message.lower() for word in ("head", "classifier"))


def test_rerank_embedder_without_head_is_refused(ce_ws):
    """all-MiniLM-L6-v2 is an embedder: it has no trained classification head to score pairs with."""
    res = ce_ws.run("rerank", "-m", "all-MiniLM-L6-v2", "-q", QUERY, "--docs", "docs.txt", check=False)
    message = assert_clean_error(res)
    assert _names_the_head(message), message


def test_rerank_checkpoint_missing_head_weights_is_refused(ce_ws, tiny_cross_encoder):
    """A one-label cross-encoder config whose weights lack the classifier would score with a random head."""
    from safetensors.numpy import load_file, save_file

    folder = ce_ws.cwd / "models" / "nohead"
    shutil.copytree(tiny_cross_encoder, folder, dirs_exist_ok=True)
    weights = load_file(str(folder / "model.safetensors"))
    save_file({k: v for k, v in weights.items() if not k.startswith("classifier.")}, str(folder / "model.safetensors"))
    res = ce_ws.run("rerank", "-m", "models/nohead", "-q", QUERY, "--docs", "docs.txt", check=False)
    message = assert_clean_error(res, "nohead")
    assert _names_the_head(message), message
