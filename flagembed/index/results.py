"""Search results and the top-k selection shared by every index."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class SearchResults:
    """Per-query ranked hits: ``ids[q]`` best first, ``scores[q]`` the matching scores.

    ``docs[q]`` (when the searcher stores documents) holds each hit's ``{"title", "text", "metadata"}``.
    """

    ids: list[list[str]] = field(default_factory=list)
    scores: list[list[float]] = field(default_factory=list)
    docs: list[list[dict[str, Any]]] | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def to_dict(self) -> list[dict[str, float]]:
        """Per query ``{doc_id: score}`` (the layout pytrec_eval and the evaluation code use)."""
        return [dict(zip(i, s)) for i, s in zip(self.ids, self.scores)]

    @classmethod
    def empty(cls, num_queries: int) -> SearchResults:
        """No hits for each of ``num_queries`` queries."""
        return cls(ids=[[] for _ in range(num_queries)], scores=[[] for _ in range(num_queries)])


def check_top_k(top_k: int) -> int:
    """Validate ``top_k``.

    Raises:
        ValueError: ``top_k`` is not a positive integer.
    """
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
        raise ValueError(f"top_k must be a positive integer, got {top_k!r}")
    return int(top_k)


def top_k_rows(scores: np.ndarray, k: int, valid: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Column indices and values of the ``k`` best entries per row, best first.

    Ties are broken by the lower column index (stable), so results are reproducible.
    ``valid`` (same shape, bool) excludes entries; excluded entries come back as index -1.
    """
    n_rows, n_cols = scores.shape
    k = min(k, n_cols)
    if k == 0:
        return np.zeros((n_rows, 0), dtype=np.int64), np.zeros((n_rows, 0), dtype=scores.dtype)
    work = scores if valid is None else np.where(valid, scores, -np.inf)
    if k < n_cols:
        part = np.argpartition(-work, k - 1, axis=1)[:, :k]
    else:
        part = np.broadcast_to(np.arange(n_cols), (n_rows, n_cols))
    vals = np.take_along_axis(work, part, axis=1)
    order = np.lexsort((part, -vals), axis=1)
    idx = np.take_along_axis(part, order, axis=1)
    vals = np.take_along_axis(vals, order, axis=1)
    if valid is not None:
        idx = np.where(np.isneginf(vals), -1, idx)
    return idx.astype(np.int64), vals


def gather_results(idx: np.ndarray, vals: np.ndarray, labels: Sequence[str] | np.ndarray) -> SearchResults:
    """Turn row-wise positions (``-1`` = no hit) into :class:`SearchResults` over ``labels``."""
    out = SearchResults()
    for row_idx, row_vals in zip(idx, vals):
        keep = row_idx >= 0
        out.ids.append([str(labels[i]) for i in row_idx[keep]])
        out.scores.append([float(v) for v in row_vals[keep]])
    return out


def sparse_top_k(queries: Any, docs_t: Any, labels: Sequence[str], top_k: int, chunk: int = 256) -> SearchResults:
    """Top ``top_k`` documents per query of the sparse product ``queries @ docs_t`` (CSR matrices).

    Only documents sharing a term with the query are returned; ties at the k-th score are kept for the
    sort, which breaks them by slot (insertion order), so results never depend on partition internals.
    """
    out = SearchResults()
    for start in range(0, queries.shape[0], chunk):
        prod = (queries[start : start + chunk] @ docs_t).tocsr()
        for i in range(prod.shape[0]):
            lo, hi = prod.indptr[i], prod.indptr[i + 1]
            cols, vals = prod.indices[lo:hi], prod.data[lo:hi]
            if len(vals) > top_k:
                kth = np.partition(vals, len(vals) - top_k)[len(vals) - top_k]
                keep = vals >= kth
                cols, vals = cols[keep], vals[keep]
            order = np.lexsort((cols, -vals))[:top_k]
            out.ids.append([labels[c] for c in cols[order]])
            out.scores.append([float(v) for v in vals[order]])
    return out
