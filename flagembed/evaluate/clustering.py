"""Clustering: mini-batch k-means on embeddings, scored by V-measure (MTEB protocol)."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from flagembed.evaluate.cache import EmbeddingCache, encode_texts, model_config
from flagembed.evaluate.report import EvalResult


def clustering_scores(vectors: np.ndarray, labels: Sequence[Any], *, batch_size: int = 500, seed: int = 42) -> dict:
    """``v_measure`` of ``MiniBatchKMeans`` with as many clusters as distinct labels.

    Raises:
        ValueError: fewer than 2 distinct labels, or vectors and labels differ in length.
    """
    from sklearn.cluster import MiniBatchKMeans
    from sklearn.metrics import v_measure_score

    labels = np.asarray(labels)
    if len(labels) != len(vectors):
        raise ValueError(f"{len(vectors)} vectors but {len(labels)} labels")
    n_clusters = len(np.unique(labels))
    if n_clusters < 2:
        raise ValueError(f"clustering needs at least 2 distinct labels, got {n_clusters}")
    km = MiniBatchKMeans(n_clusters=n_clusters, batch_size=batch_size, n_init="auto", random_state=seed)
    assigned = km.fit_predict(np.asarray(vectors, dtype=np.float32))
    return {"v_measure": float(v_measure_score(labels, assigned))}


def evaluate_clustering(
    model: Any,
    texts: Sequence[str],
    labels: Sequence[Any],
    *,
    dataset: str = "clustering",
    split: str = "test",
    batch_size: int = 500,
    seed: int = 42,
    cache_dir: str | os.PathLike[str] | None = None,
    model_name: str | None = None,
) -> EvalResult:
    """Embed ``texts`` (no instruction), cluster, score V-measure against ``labels``."""
    start = time.perf_counter()
    cache = EmbeddingCache(cache_dir) if cache_dir is not None else None
    vectors = encode_texts(model, list(texts), cache=cache)
    metrics = clustering_scores(vectors, labels, batch_size=batch_size, seed=seed)
    config = model_config(model)
    return EvalResult(
        task="clustering",
        dataset=dataset,
        split=split,
        model=model_name or str(config.get("name")),
        metrics=metrics,
        main_score="v_measure",
        config={"model": config, "eval": {"batch_size": batch_size, "seed": seed}},
        stats={"texts": len(texts)},
        seconds=time.perf_counter() - start,
    )
