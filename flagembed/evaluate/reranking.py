"""Reranking: order each query's candidates (embedding cosine or a reranker) and score MAP / MRR@10 / nDCG@10."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from flagembed.evaluate.cache import EmbeddingCache, encode_texts, model_config
from flagembed.evaluate.metrics import evaluate_run
from flagembed.evaluate.report import EvalResult


def _check_samples(samples: Sequence[Mapping[str, Any]]) -> None:
    if not samples:
        raise ValueError("no reranking samples given")
    for i, s in enumerate(samples):
        for key in ("query", "positive", "negative"):
            if key not in s:
                raise ValueError(f"samples[{i}] lacks {key!r}; each sample needs query, positive, negative")
        if isinstance(s["positive"], str) or isinstance(s["negative"], str):
            raise TypeError(f"samples[{i}]: positive and negative must be lists of strings")


def reranking_scores(samples: Sequence[Mapping[str, Any]], scores: Sequence[Sequence[float]]) -> dict[str, float]:
    """``map`` (full depth), ``mrr_at_10`` and ``ndcg_at_10`` from per-sample candidate scores (positives first)."""
    qrels: dict[str, dict[str, int]] = {}
    run: dict[str, dict[str, float]] = {}
    depth = 10
    for i, (s, sc) in enumerate(zip(samples, scores)):
        n_pos, n = len(s["positive"]), len(s["positive"]) + len(s["negative"])
        if len(sc) != n:
            raise ValueError(f"samples[{i}]: {len(sc)} scores for {n} candidates")
        if n_pos == 0 or n == n_pos:
            continue  # MTEB skips samples without a positive or without a negative
        qrels[str(i)] = {f"{j:06d}": int(j < n_pos) for j in range(n)}
        run[str(i)] = {f"{j:06d}": float(v) for j, v in enumerate(sc)}
        depth = max(depth, n)
    if not qrels:
        raise ValueError("no sample has both a positive and a negative candidate")
    res = evaluate_run(qrels, run, k_values=sorted({10, depth}), metrics=("map", "mrr", "ndcg"))
    return {
        "map": res.scores[f"map_at_{depth}"],
        "mrr_at_10": res.scores["mrr_at_10"],
        "ndcg_at_10": res.scores["ndcg_at_10"],
    }


def evaluate_reranking(
    model: Any,
    samples: Sequence[Mapping[str, Any]],
    *,
    reranker: Any | None = None,
    dataset: str = "reranking",
    split: str = "test",
    cache_dir: str | os.PathLike[str] | None = None,
    model_name: str | None = None,
) -> EvalResult:
    """Rank each sample's ``positive`` + ``negative`` candidates for its ``query``; main score ``map``.

    With ``reranker`` (anything with ``compute_score(pairs)``) candidates are scored by it; otherwise by the
    cosine of ``model.encode_queries(query)`` and ``model.encode_corpus(candidate)``.
    """
    _check_samples(samples)
    start = time.perf_counter()
    candidates = [list(s["positive"]) + list(s["negative"]) for s in samples]
    if reranker is not None:
        pairs = [(s["query"], c) for s, cands in zip(samples, candidates) for c in cands]
        flat = np.asarray(reranker.compute_score(pairs), dtype=np.float64).reshape(-1)
    else:
        cache = EmbeddingCache(cache_dir) if cache_dir is not None else None
        q = _encode_side(model, "encode_queries", [s["query"] for s in samples], cache)
        docs = [c for cands in candidates for c in cands]
        d = _encode_side(model, "encode_corpus", docs, cache)
        owner = np.repeat(np.arange(len(samples)), [len(c) for c in candidates])
        qn = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
        dn = d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-12)
        flat = np.einsum("ij,ij->i", qn[owner], dn)
    bounds = np.cumsum([0] + [len(c) for c in candidates])
    per_sample = [flat[bounds[i] : bounds[i + 1]] for i in range(len(samples))]
    metrics = reranking_scores(samples, per_sample)
    config = model_config(model) if model is not None else {}
    cfg: dict[str, Any] = {"model": config, "eval": {"samples": len(samples)}}
    rname = None
    if reranker is not None:
        rname = str(getattr(getattr(reranker, "settings", None), "name", None) or type(reranker).__name__)
        cfg["reranker"] = {"name": rname}
    return EvalResult(
        task="reranking",
        dataset=dataset,
        split=split,
        model=model_name or str(config.get("name") or rname),
        reranker=rname,
        metrics=metrics,
        main_score="map",
        config=cfg,
        stats={"samples": len(samples)},
        seconds=time.perf_counter() - start,
    )


class _Side:
    """Adapter so :func:`encode_texts` calls ``encode_queries``/``encode_corpus`` (keeps the cache key distinct)."""

    def __init__(self, model: Any, method: str) -> None:
        self.model, self.method = model, method

    def encode(self, texts: list[str], **kwargs: Any) -> Any:
        return getattr(self.model, self.method)(texts, **kwargs)

    def eval_config(self) -> dict[str, Any]:
        return {**model_config(self.model), "method": self.method}


def _encode_side(model: Any, method: str, texts: list[str], cache: EmbeddingCache | None) -> np.ndarray:
    return encode_texts(_Side(model, method), texts, cache=cache)
