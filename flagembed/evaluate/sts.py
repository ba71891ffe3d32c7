"""STS evaluation: correlation of embedding similarity with gold scores (MTEB's STS protocol)."""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np
from scipy.stats import pearsonr, spearmanr

from flagembed.evaluate.cache import EmbeddingCache, encode_texts, model_config
from flagembed.evaluate.loaders import PairData
from flagembed.evaluate.report import EvalResult


def paired_similarities(a: np.ndarray, b: np.ndarray) -> dict[str, np.ndarray]:
    """Row-wise cosine, negative Manhattan, negative Euclidean and dot similarities of two ``(N, d)`` arrays."""
    a64, b64 = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    norms = np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1)
    dot = np.einsum("ij,ij->i", a64, b64)
    return {
        "cosine": np.divide(dot, norms, out=np.zeros_like(dot), where=norms > 0),
        "manhattan": -np.abs(a64 - b64).sum(axis=1),
        "euclidean": -np.linalg.norm(a64 - b64, axis=1),
        "dot": dot,
    }


def sts_scores(a: np.ndarray, b: np.ndarray, gold: np.ndarray) -> dict[str, float]:
    """``cosine_spearman``, ``cosine_pearson`` and the same for manhattan, euclidean and dot (fractions).

    Raises:
        ValueError: lengths differ or fewer than 2 pairs.
    """
    if not (len(a) == len(b) == len(gold)):
        raise ValueError(f"lengths differ: {len(a)} and {len(b)} embeddings, {len(gold)} scores")
    if len(gold) < 2:
        raise ValueError(f"need at least 2 pairs to correlate, got {len(gold)}")
    out: dict[str, float] = {}
    for name, sims in paired_similarities(a, b).items():
        out[f"{name}_spearman"] = float(spearmanr(gold, sims).statistic)
        out[f"{name}_pearson"] = float(pearsonr(gold, sims).statistic)
    return out


def evaluate_sts(
    model: Any,
    data: PairData,
    *,
    split: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    model_name: str | None = None,
    show_progress: bool | None = None,
) -> EvalResult:
    """Embed both sides of each pair (no instruction), correlate similarities with the gold scores.

    The main score is ``cosine_spearman`` (MTEB). Each distinct sentence is embedded once. The result's split
    is ``split`` when given, else what the loader read (``data.split``).
    """
    start = time.perf_counter()
    cache = EmbeddingCache(cache_dir) if cache_dir is not None else None
    vectors = encode_texts(model, data.sentence1 + data.sentence2, cache=cache, show_progress=show_progress)
    n = len(data)
    metrics = sts_scores(vectors[:n], vectors[n:], data.scores)
    config = model_config(model)
    return EvalResult(
        task="sts",
        dataset=data.name,
        split=split or data.split,
        model=model_name or str(config.get("name")),
        metrics=metrics,
        main_score="cosine_spearman",
        config={"model": config, "eval": {"pairs": n}},
        stats={"pairs": n, "cache_hits": cache.hits if cache else 0},
        seconds=time.perf_counter() - start,
    )
