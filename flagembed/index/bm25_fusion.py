"""Dense + BM25 hybrid search: weighted fusion of cosine and max-normalised BM25, or reciprocal-rank fusion.

This is the glue :class:`flagembed.index.HybridSearcher` uses for its ``bm25`` mode (and usable on its own):
each mode proposes ``candidates`` documents, every proposed document is rescored exactly in both modes, and
``weighted`` ranks by ``(w_dense * cos + w_bm25 * bm25 / best_bm25(query)) / (w_dense + w_bm25)``; BM25
scores are unbounded, so each query's are divided by its best BM25 score to share cosine's 0..1 range.
``rrf`` ranks by ``sum_m w_m / (rrf_k + rank_m)`` over the two candidate lists.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np

from flagembed.index.bm25 import BM25Index
from flagembed.index.dense import DenseIndex
from flagembed.index.results import SearchResults, check_top_k, gather_results, top_k_rows
from flagembed.inference.inputs import as_text_list

Fusion = Literal["weighted", "rrf"]
DEFAULT_BM25_WEIGHTS = {"dense": 0.5, "bm25": 0.5}


def normalized_bm25(raw: np.ndarray, best: float) -> np.ndarray:
    """BM25 scores divided by the query's best BM25 score (0 when the query matches nothing)."""
    return raw / best if best > 0 else np.zeros_like(raw)


def rrf_scores(
    rankings: Mapping[str, Sequence[str]], weights: Mapping[str, float], rrf_k: int = 60
) -> dict[str, float]:
    """Reciprocal-rank fusion of ranked id lists: ``sum_m w_m / (rrf_k + rank)`` (rank from 1)."""
    fused: dict[str, float] = {}
    for mode, ids in rankings.items():
        for rank, doc in enumerate(ids, 1):
            fused[doc] = fused.get(doc, 0.0) + weights[mode] / (rrf_k + rank)
    return fused


def fuse_with_dense(
    dense: DenseIndex,
    query_vectors: np.ndarray,
    bm25: BM25Index,
    queries: str | Sequence[str],
    top_k: int = 10,
    *,
    weights: Mapping[str, float] | None = None,
    fusion: Fusion = "weighted",
    rrf_k: int = 60,
    candidates: int = 100,
) -> SearchResults:
    """Hybrid top-``top_k`` over a dense index and a BM25 index holding the same document ids.

    Args:
        dense: vectors of the corpus (inner product = cosine for normalised embeddings).
        query_vectors: ``(num_queries, dim)`` query embeddings (e.g. ``Embedder.encode_queries``).
        bm25: the corpus' BM25 index; ``queries`` are its query texts, aligned with ``query_vectors``.
        weights: ``{"dense": w, "bm25": w}`` (default 0.5 / 0.5).
        fusion: ``weighted`` (exact rescoring of the union of candidates) or ``rrf``.
        candidates: documents each mode proposes per query.

    Raises:
        ValueError: misaligned queries, unknown fusion, bad weights.
    """
    top_k = check_top_k(top_k)
    texts, _ = as_text_list(queries, "queries")
    qv = np.asarray(query_vectors, dtype=np.float32)
    qv = qv[None, :] if qv.ndim == 1 else qv
    if len(qv) != len(texts):
        raise ValueError(f"got {len(qv)} query vectors for {len(texts)} query texts")
    if fusion not in ("weighted", "rrf"):
        raise ValueError(f"unknown fusion {fusion!r}; valid: weighted, rrf")
    w = {**DEFAULT_BM25_WEIGHTS, **(weights or {})}
    if set(w) != {"dense", "bm25"} or any(not np.isfinite(v) or v < 0 for v in w.values()) or sum(w.values()) <= 0:
        raise ValueError(f"weights must be {{'dense': w, 'bm25': w}} with finite values >= 0 and a sum > 0, got {w}")
    pool = max(top_k, candidates)
    by_dense = dense.search(qv, pool)
    by_bm25 = bm25.search(texts, pool)
    out = SearchResults()
    for qi in range(len(texts)):
        if fusion == "rrf":
            fused = rrf_scores({"dense": by_dense.ids[qi], "bm25": by_bm25.ids[qi]}, w, rrf_k)
            docs = list(fused)
            values = np.array([[fused[d] for d in docs]], dtype=np.float64)
        else:
            docs = list(dict.fromkeys([*by_dense.ids[qi], *by_bm25.ids[qi]]))
            best = by_bm25.scores[qi][0] if by_bm25.scores[qi] else 0.0
            cos = dense.vectors(docs) @ qv[qi] if docs else np.zeros(0, np.float32)
            lex = normalized_bm25(bm25.scores([texts[qi]], docs)[0], best) if docs else np.zeros(0, np.float32)
            values = ((w["dense"] * cos + w["bm25"] * lex) / sum(w.values()))[None, :].astype(np.float64)
        if not docs:
            out.ids.append([])
            out.scores.append([])
            continue
        idx, vals = top_k_rows(values, top_k)
        res = gather_results(idx, vals, docs)
        out.ids += res.ids
        out.scores += res.scores
    return out

