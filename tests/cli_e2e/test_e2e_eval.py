"""``flagembed eval retrieval`` and ``flagembed eval sts`` on small real slices, against the Python API."""

from __future__ import annotations

import json

import numpy as np
import pytest
from e2e_helpers import assert_clean_error, find_json, name_only


def _printed(value: float, text: str) -> bool:
    """The table shows the metric as a fraction (4 decimals) or as a percentage (2 decimals)."""
    return f"{value:.4f}" in text or f"{100 * value:.2f}" in text


@pytest.fixture(scope="module")
def python_retrieval(local_embedder, ws):
    from flagembed.evaluate import evaluate_retrieval, load_retrieval

    data = load_retrieval(ws.cwd / "scifact", split="train")
    (result,) = evaluate_retrieval(local_embedder, data, k_values=(1, 3, 5, 10, 100))
    return result.metrics


def test_eval_retrieval_train_split(ws, python_retrieval):
    res = ws.run("eval", "retrieval", "-m", ws.model, "-d", "scifact", "--split", "train", "-o", "eval-out",
                 "--k-values", "1,3,5,10,100")  # fmt: skip
    files = find_json(ws.cwd / "eval-out")
    assert len(files) == 1, files
    assert "train" in files[0].name
    saved = json.loads(files[0].read_text(encoding="utf-8"))
    metrics = saved["metrics"]
    assert 0.0 < metrics["ndcg_at_10"] <= 1.0  # fractions, the way MTEB stores them
    for key in ("ndcg_at_10", "recall_at_10", "mrr_at_10", "recall_at_100"):
        assert metrics[key] == pytest.approx(python_retrieval[key], abs=1e-4), key
        assert _printed(metrics[key], res.stdout), (key, res.stdout)
    table = (ws.cwd / "eval-out" / "eval_results.md").read_text(encoding="utf-8")
    assert f"{100 * metrics['ndcg_at_10']:.2f}" in table  # the markdown report is x100 (docs/evaluation.md)


def test_eval_retrieval_rerun_uses_cache(ws):
    name_only(ws)
    before = {p: p.stat().st_mtime_ns for p in (ws.cwd / "eval-out").rglob("*.npy")}
    assert before, "no embedding cache written under -o"
    ws.run("eval", "retrieval", "-m", ws.model, "-d", "scifact", "--split", "train", "-o", "eval-out",
           "--k-values", "1,3,5,10,100")  # fmt: skip
    after = {p: p.stat().st_mtime_ns for p in (ws.cwd / "eval-out").rglob("*.npy")}
    assert after == before


def test_eval_retrieval_missing_split_is_one_line_error(ws_name):
    res = ws_name.run("eval", "retrieval", "-m", ws_name.model, "-d", "scifact", "--split", "test", "-o", "bad-out",
                      check=False)  # fmt: skip
    assert_clean_error(res, "test")
    assert not find_json(ws_name.cwd / "bad-out") if (ws_name.cwd / "bad-out").exists() else True


def test_eval_sts(ws, local_embedder):
    from scipy.stats import spearmanr

    res = ws.run("eval", "sts", "-m", ws.model, "-d", "sts.tsv", "--name", "STSB-train50", "-o", "sts-out")
    files = find_json(ws.cwd / "sts-out")
    assert len(files) == 1, files
    metrics = json.loads(files[0].read_text(encoding="utf-8"))["metrics"]
    rows = [ln.split("\t") for ln in (ws.cwd / "sts.tsv").read_text(encoding="utf-8").splitlines()[1:]]
    a = local_embedder.encode([r[0] for r in rows])
    b = local_embedder.encode([r[1] for r in rows])
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    want = spearmanr(cos, [float(r[2]) for r in rows]).statistic
    assert metrics["cosine_spearman"] == pytest.approx(want, abs=1e-4)
    assert _printed(metrics["cosine_spearman"], res.stdout), res.stdout
    assert "50" in res.stdout  # the pair count


def test_eval_retrieval_fused_rerank_with_the_bundled_name(ws_name, tiny_cross_encoder):
    """``--rerank-weight`` in a fresh process: the stored fused scores are ``fuse_scores`` of the retriever's
    stored scores and the reranker's own ``compute_score``; a weight outside [0, 1] is a one-line error."""
    from flagembed.evaluate import load_retrieval
    from flagembed.evaluate.retrieval import fuse_scores
    from flagembed.inference import Reranker

    args = ["eval", "retrieval", "-m", ws_name.model, "-d", "scifact", "--split", "train", "-o", "eval-fused",
            "--k-values", "1,5", "--search-top-k", "5", "--rerank", str(tiny_cross_encoder), "--rerank-top-k", "5"]
    bad = ws_name.run(*args, "--rerank-weight", "2", check=False)
    assert_clean_error(bad, "rerank_weight", "2")
    ws_name.run(*args, "--rerank-weight", "0.6")
    dumps = sorted((ws_name.cwd / "eval-fused").rglob("*.search.json"))
    plain = [p for p in dumps if "NoReranker" in p.parts]
    fused = [p for p in dumps if any(part.endswith("-fused-w0.6") for part in p.parts)]
    assert len(plain) == 1 and len(fused) == 1, dumps
    base = json.loads(plain[0].read_text(encoding="utf-8"))
    got = json.loads(fused[0].read_text(encoding="utf-8"))
    data = load_retrieval(ws_name.cwd / "scifact", split="train")
    texts = dict(zip(data.doc_ids(), data.doc_texts()))
    reranker = Reranker(str(tiny_cross_encoder), device="cpu", dtype="fp32")
    for qid in list(got)[:5]:
        docs = list(base[qid])
        raw = np.ravel(reranker.compute_score([(data.queries[qid], texts[d]) for d in docs]))
        want = fuse_scores(dict(zip(docs, map(float, raw))), base[qid], 0.6)
        assert got[qid] == pytest.approx(want, abs=1e-4), qid


def test_eval_retrieval_bad_m3_weights_with_the_bundled_name(ws_name):
    """``--m3-weights`` is checked before the model loads, in a fresh process, with one line naming the value."""
    res = ws_name.run("eval", "retrieval", "-m", ws_name.model, "-d", "scifact", "--split", "train", "-o", "m3w-out",
                      "--modes", "hybrid", "--m3-weights", "1,0", check=False)  # fmt: skip
    assert_clean_error(res, "2 weights for 3 modes")
    assert not (ws_name.cwd / "m3w-out").exists()


def test_eval_retrieval_cache_dir_with_the_bundled_name(ws_name):
    """``--cache-dir`` in a fresh process: a second output reuses the vectors the first run cached there."""
    args = ["eval", "retrieval", "-m", ws_name.model, "-d", "scifact", "--split", "train", "--k-values", "1,10",
            "--search-top-k", "10", "--cache-dir", "shared-cache"]  # fmt: skip
    ws_name.run(*args, "-o", "out-a")
    cached = {p: p.stat().st_mtime_ns for p in (ws_name.cwd / "shared-cache").glob("*.npy")}
    assert len(cached) == 2 and not (ws_name.cwd / "out-a" / "embedding_cache").exists()
    ws_name.run(*args, "-o", "out-b")
    (second,) = find_json(ws_name.cwd / "out-b")
    (first,) = find_json(ws_name.cwd / "out-a")
    b, a = (json.loads(f.read_text(encoding="utf-8")) for f in (second, first))
    assert b["stats"]["cache_hits"] == 2 and b["metrics"] == a["metrics"]
    assert {p: p.stat().st_mtime_ns for p in (ws_name.cwd / "shared-cache").glob("*.npy")} == cached
