"""Classification (MTEB protocol) and clustering (mini-batch k-means, V-measure)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score

from flagembed.evaluate import evaluate_classification, evaluate_clustering
from flagembed.evaluate.classification import classification_scores, undersample
from flagembed.evaluate.clustering import clustering_scores


def test_undersample_follows_mteb():
    rng = np.random.RandomState(42)
    idxs = np.arange(20)
    labels = [i % 2 for i in range(20)]
    picked = undersample(labels, 3, rng, idxs)
    expected_order = np.random.RandomState(42).permutation(20)
    want = []
    counts = {0: 0, 1: 0}
    for i in expected_order:
        if counts[labels[i]] < 3:
            want.append(int(i))
            counts[labels[i]] += 1
    assert picked == want


def test_classification_single_experiment_matches_sklearn():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(3, 5)) * 3
    y_train, y_test = rng.integers(0, 3, 90), rng.integers(0, 3, 60)
    x_train = centers[y_train] + rng.normal(size=(90, 5))
    x_test = centers[y_test] + rng.normal(size=(60, 5))
    out = classification_scores(x_train, y_train, x_test, y_test, samples_per_label=8, n_experiments=1)
    picked = undersample(list(y_train), 8, np.random.RandomState(42), np.arange(90))
    clf = LogisticRegression(max_iter=100, random_state=42).fit(x_train[picked], y_train[picked])
    assert out["accuracy"] == pytest.approx(accuracy_score(y_test, clf.predict(x_test)))
    assert out["accuracy"] > 0.8


def test_clustering_separable_blobs():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], 30)
    x = np.eye(3)[labels] * 10 + rng.normal(size=(90, 3)) * 0.1
    assert clustering_scores(x, labels)["v_measure"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="2 distinct labels"):
        clustering_scores(x, np.zeros(90))


def test_text_level_evaluators_run(tiny_embedder):
    texts = ["red apple", "green apple", "blue car", "fast car", "apple pie", "car wheel"]
    labels = ["fruit", "fruit", "car", "car", "fruit", "car"]
    res = evaluate_classification(tiny_embedder, texts, labels, texts, labels, n_experiments=2)
    assert res.main_score == "accuracy" and res.config["eval"]["normalize"] is False
    clu = evaluate_clustering(tiny_embedder, texts, labels)
    assert 0 <= clu.metrics["v_measure"] <= 1
