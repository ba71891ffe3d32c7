"""Classification: logistic regression on embeddings, MTEB's protocol (8 samples per label, 10 experiments)."""

from __future__ import annotations

import inspect
import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from flagembed.evaluate.cache import EmbeddingCache, encode_texts, model_config
from flagembed.evaluate.report import EvalResult


def undersample(labels: Sequence[Any], samples_per_label: int, rng: np.random.RandomState, idxs: np.ndarray) -> list:
    """Shuffle ``idxs`` in place with ``rng``; keep the first ``samples_per_label`` of each label (MTEB)."""
    rng.shuffle(idxs)
    counts: dict[Any, int] = {}
    picked = []
    for i in idxs:
        label = labels[i]
        if counts.get(label, 0) < samples_per_label:
            picked.append(int(i))
            counts[label] = counts.get(label, 0) + 1
    return picked


def classification_scores(
    train_x: np.ndarray,
    train_y: Sequence[Any],
    test_x: np.ndarray,
    test_y: Sequence[Any],
    *,
    samples_per_label: int = 8,
    n_experiments: int = 10,
    max_iter: int = 100,
    seed: int = 42,
) -> dict[str, float]:
    """Mean ``accuracy``, ``f1`` (macro), ``f1_weighted`` (and ``ap`` when binary) over the experiments."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, average_precision_score, f1_score

    if n_experiments < 1 or samples_per_label < 1:
        raise ValueError(f"n_experiments ({n_experiments}) and samples_per_label ({samples_per_label}) must be >= 1")
    train_y, test_y = np.asarray(train_y), np.asarray(test_y)
    rng = np.random.RandomState(seed)
    idxs = np.arange(len(train_y))
    binary = len(np.unique(test_y)) == 2
    runs: list[dict[str, float]] = []
    for _ in range(n_experiments):
        picked = undersample(list(train_y), samples_per_label, rng, idxs)
        clf = LogisticRegression(max_iter=max_iter, random_state=seed)
        clf.fit(train_x[picked], train_y[picked])
        pred = clf.predict(test_x)
        scores = {
            "accuracy": float(accuracy_score(test_y, pred)),
            "f1": float(f1_score(test_y, pred, average="macro")),
            "f1_weighted": float(f1_score(test_y, pred, average="weighted")),
        }
        if binary:
            positive = np.unique(test_y)[1]
            scores["ap"] = float(average_precision_score(test_y == positive, pred == positive))
        runs.append(scores)
    return {k: float(np.mean([r[k] for r in runs])) for k in runs[0]}


def _encode_kwargs(model: Any) -> dict[str, Any]:
    """MTEB/FlagEmbedding classify un-normalized embeddings when the encoder allows it."""
    try:
        params = inspect.signature(model.encode).parameters
    except (TypeError, ValueError):
        return {}
    return {"normalize": False} if "normalize" in params else {}


def evaluate_classification(
    model: Any,
    train_texts: Sequence[str],
    train_labels: Sequence[Any],
    test_texts: Sequence[str],
    test_labels: Sequence[Any],
    *,
    dataset: str = "classification",
    split: str = "test",
    samples_per_label: int = 8,
    n_experiments: int = 10,
    seed: int = 42,
    cache_dir: str | os.PathLike[str] | None = None,
    model_name: str | None = None,
) -> EvalResult:
    """Train logistic regression on few-shot samples of the train embeddings; main score ``accuracy``."""
    start = time.perf_counter()
    cache = EmbeddingCache(cache_dir) if cache_dir is not None else None
    kwargs = _encode_kwargs(model)
    vectors = encode_texts(model, list(train_texts) + list(test_texts), cache=cache, **kwargs)
    n = len(train_texts)
    metrics = classification_scores(
        vectors[:n],
        train_labels,
        vectors[n:],
        test_labels,
        samples_per_label=samples_per_label,
        n_experiments=n_experiments,
        seed=seed,
    )
    config = model_config(model)
    args = {"samples_per_label": samples_per_label, "n_experiments": n_experiments, "seed": seed, **kwargs}
    return EvalResult(
        task="classification",
        dataset=dataset,
        split=split,
        model=model_name or str(config.get("name")),
        metrics=metrics,
        main_score="accuracy",
        config={"model": config, "eval": args},
        stats={"train": n, "test": len(test_texts)},
        seconds=time.perf_counter() - start,
    )
