"""Pair classification: AP equals sklearn; best accuracy/F1 equal an exhaustive threshold search."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, average_precision_score, f1_score

from flagembed.evaluate import PairData, evaluate_pair_classification
from flagembed.evaluate.pair_classification import best_threshold_scores, pair_classification_scores


def _exhaustive(scores, labels):
    cands = np.r_[np.unique(scores), scores.max() + 1]
    accs = [accuracy_score(labels, scores >= t) for t in cands]
    f1s = [f1_score(labels, scores >= t, zero_division=0) for t in cands]
    return max(accs), max(f1s)


@pytest.mark.parametrize("seed", [0, 1])
def test_best_thresholds_match_exhaustive_search(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, size=200)
    scores = np.round(labels * 0.3 + rng.normal(size=200), 1)  # rounded -> ties
    out = best_threshold_scores(scores, labels)
    acc, f1 = _exhaustive(scores, labels)
    assert out["accuracy"] == pytest.approx(acc)
    assert out["f1"] == pytest.approx(f1)
    assert accuracy_score(labels, scores >= out["accuracy_threshold"]) == pytest.approx(acc)


def test_ap_and_validation():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(40, 6)), rng.normal(size=(40, 6))
    labels = rng.integers(0, 2, size=40)
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    out = pair_classification_scores(a, b, labels)
    assert out["cosine_ap"] == pytest.approx(average_precision_score(labels, cos))
    assert out["max_ap"] >= out["cosine_ap"]
    with pytest.raises(ValueError, match="0/1 labels"):
        pair_classification_scores(a, b, np.full(40, 2))


def test_evaluate_pair_classification(tiny_embedder):
    data = PairData("toy", ["a b", "c d", "e f", "g h"], ["a b c", "x y", "e f g", "z w"], np.array([1, 0, 1, 0.0]))
    res = evaluate_pair_classification(tiny_embedder, data)
    assert res.main_score == "cosine_ap" and 0 <= res.main <= 1
