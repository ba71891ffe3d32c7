"""Reranking evaluator: MAP / MRR@10 against sklearn AP and a direct reciprocal-rank computation."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from flagembed.evaluate import evaluate_reranking
from flagembed.evaluate.reranking import reranking_scores


def test_scores_match_sklearn_ap_and_mrr():
    rng = np.random.default_rng(0)
    samples, scores, aps, rrs = [], [], [], []
    for _ in range(20):
        n_pos, n_neg = int(rng.integers(1, 4)), int(rng.integers(1, 8))
        samples.append({"query": "q", "positive": ["p"] * n_pos, "negative": ["n"] * n_neg})
        s = rng.normal(size=n_pos + n_neg)  # continuous: no ties
        scores.append(s)
        y = np.r_[np.ones(n_pos), np.zeros(n_neg)]
        aps.append(average_precision_score(y, s))
        first = int(np.flatnonzero(y[np.argsort(-s)])[0])
        rrs.append(1 / (first + 1) if first < 10 else 0)
    out = reranking_scores(samples, scores)
    assert out["map"] == pytest.approx(np.mean(aps))
    assert out["mrr_at_10"] == pytest.approx(np.mean(rrs))


def test_evaluate_with_reranker_and_embedder(tiny_embedder):
    samples = [
        {"query": "cats purr", "positive": ["cats purr loudly"], "negative": ["stocks fell", "rain fell"]},
        {"query": "bread yeast", "positive": ["bread needs yeast"], "negative": ["cars drive"]},
    ]

    class Overlap:
        def compute_score(self, pairs):
            return [len(set(q.split()) & set(p.split())) for q, p in pairs]

    res = evaluate_reranking(None, samples, reranker=Overlap())
    assert res.metrics["map"] == pytest.approx(1.0) and res.reranker == "Overlap"
    emb = evaluate_reranking(tiny_embedder, samples)
    assert 0 < emb.metrics["map"] <= 1
    with pytest.raises(ValueError, match="lacks 'negative'"):
        evaluate_reranking(tiny_embedder, [{"query": "q", "positive": ["p"]}])
