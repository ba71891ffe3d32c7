"""Pair classification: how well embedding similarity separates positive from negative pairs (MTEB protocol)."""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score

from flagembed.evaluate.cache import EmbeddingCache, encode_texts, model_config
from flagembed.evaluate.loaders import PairData
from flagembed.evaluate.report import EvalResult
from flagembed.evaluate.sts import paired_similarities


def best_threshold_scores(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Best accuracy and best F1 over all thresholds (a threshold never splits tied scores).

    Returns ``accuracy``, ``accuracy_threshold``, ``f1``, ``precision``, ``recall``, ``f1_threshold``.
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels).astype(bool)
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], labels[order]
    n, n_pos = len(y), int(y.sum())
    tp = np.cumsum(y)  # predicting the top i+1 as positive
    fp = np.arange(1, n + 1) - tp
    cut = np.r_[s[:-1] != s[1:], True]  # only cut between distinct scores
    idx = np.flatnonzero(cut)
    acc = (tp[idx] + (n - n_pos - fp[idx])) / n
    mid = np.r_[(s[:-1] + s[1:]) / 2, s[-1] - 1e-9][idx]
    best_acc = int(np.argmax(acc)) if len(acc) else 0
    precision = tp[idx] / (idx + 1)
    recall = tp[idx] / n_pos if n_pos else np.zeros(len(idx))
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(denom), where=denom > 0)
    best_f1 = int(np.argmax(f1)) if len(f1) else 0
    all_neg_acc = (n - n_pos) / n  # threshold above every score
    accuracy = max(float(acc[best_acc]), all_neg_acc)
    return {
        "accuracy": accuracy,
        "accuracy_threshold": float(mid[best_acc]) if accuracy > all_neg_acc else float(s[0] + 1e-9),
        "f1": float(f1[best_f1]),
        "precision": float(precision[best_f1]),
        "recall": float(recall[best_f1]),
        "f1_threshold": float(mid[best_f1]),
    }


def pair_classification_scores(a: np.ndarray, b: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """``<sim>_ap``, ``<sim>_accuracy``, ``<sim>_f1``, ... for cosine, manhattan, euclidean and dot; ``max_ap``.

    Raises:
        ValueError: labels are not binary 0/1, or only one class is present.
    """
    labels = np.asarray(labels)
    values = set(np.unique(labels).tolist())
    if not values <= {0, 1} or len(values) < 2:
        raise ValueError(f"pair classification needs 0/1 labels with both classes; found {sorted(values)[:10]}")
    out: dict[str, float] = {}
    for name, sims in paired_similarities(a, b).items():
        out[f"{name}_ap"] = float(average_precision_score(labels, sims))
        for key, value in best_threshold_scores(sims, labels).items():
            out[f"{name}_{key}"] = value
    out["max_ap"] = max(out[f"{n}_ap"] for n in ("cosine", "manhattan", "euclidean", "dot"))
    return out


def evaluate_pair_classification(
    model: Any,
    data: PairData,
    *,
    split: str = "test",
    cache_dir: str | os.PathLike[str] | None = None,
    model_name: str | None = None,
    show_progress: bool | None = None,
) -> EvalResult:
    """Embed both sides (no instruction) and score 0/1 labels; main score ``cosine_ap``."""
    start = time.perf_counter()
    cache = EmbeddingCache(cache_dir) if cache_dir is not None else None
    vectors = encode_texts(model, data.sentence1 + data.sentence2, cache=cache, show_progress=show_progress)
    n = len(data)
    metrics = pair_classification_scores(vectors[:n], vectors[n:], data.scores.astype(int))
    config = model_config(model)
    return EvalResult(
        task="pair_classification",
        dataset=data.name,
        split=split,
        model=model_name or str(config.get("name")),
        metrics=metrics,
        main_score="cosine_ap",
        config={"model": config, "eval": {"pairs": n}},
        stats={"pairs": n},
        seconds=time.perf_counter() - start,
    )
