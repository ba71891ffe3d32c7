"""M3Output: BGE-M3's three outputs in batch-friendly forms, convertible to the reference's dicts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from flagembed.models import pad_vectors


@dataclass
class M3Output:
    """Dense vectors, lexical weights as CSR (N × vocab) and ColBERT vectors for N texts.

    ``None`` marks an output that was not asked for.
    """

    dense: np.ndarray | None = None  # (N, D) float32
    sparse: sp.csr_matrix | None = None  # (N, vocab) float32, never normalized
    colbert: list[np.ndarray] | None = None  # N arrays (Li, Dc) float32

    def __len__(self) -> int:
        for part in (self.dense, self.sparse, self.colbert):
            if part is not None:
                return int(part.shape[0]) if not isinstance(part, list) else len(part)
        return 0

    def colbert_padded(self) -> tuple[np.ndarray, np.ndarray]:
        """ColBERT vectors as a zero-padded ``(N, max L, Dc)`` array plus the real lengths ``(N,)``.

        Raises:
            ValueError: ColBERT vectors were not computed.
        """
        if self.colbert is None:
            raise ValueError("ColBERT vectors were not computed; encode with return_colbert_vecs=True")
        dim = self.colbert[0].shape[1] if self.colbert else 0
        return pad_vectors(self.colbert, dim)

    def lexical_weights(self) -> list[dict[str, float]]:
        """Per text ``{str(token_id): weight}``, as FlagEmbedding returns them.

        Raises:
            ValueError: sparse weights were not computed.
        """
        if self.sparse is None:
            raise ValueError("lexical weights were not computed; encode with return_sparse=True")
        return csr_to_dicts(self.sparse)

    def to_reference(self, single: bool = False) -> dict[str, Any]:
        """``{"dense_vecs", "lexical_weights", "colbert_vecs"}``; with ``single`` one item per key."""
        out: dict[str, Any] = {
            "dense_vecs": self.dense,
            "lexical_weights": self.lexical_weights() if self.sparse is not None else None,
            "colbert_vecs": self.colbert,
        }
        if single:
            out = {k: (v[0] if v is not None else None) for k, v in out.items()}
        return out


def csr_to_dicts(matrix: sp.csr_matrix) -> list[dict[str, float]]:
    """Rows of a CSR matrix as ``{str(column): value}`` dicts (values are numpy float32 scalars)."""
    m = matrix.tocsr()
    out = []
    for i in range(m.shape[0]):
        lo, hi = m.indptr[i], m.indptr[i + 1]
        out.append(dict(zip(map(str, m.indices[lo:hi].tolist()), m.data[lo:hi])))
    return out


def dicts_to_csr(weights: list[dict[str, float]], vocab_size: int) -> sp.csr_matrix:
    """Reference-style lexical-weight dicts (keys are token ids as strings) as a CSR matrix.

    Raises:
        ValueError: a key is not an integer id within ``vocab_size`` (names the row and key).
    """
    indptr = [0]
    cols: list[int] = []
    vals: list[float] = []
    for i, row in enumerate(weights):
        if not isinstance(row, dict):
            raise TypeError(f"lexical_weights[{i}] must be a dict, got {type(row).__name__}")
        for key, value in row.items():
            try:
                col = int(key)
            except (TypeError, ValueError):
                raise ValueError(f"lexical_weights[{i}] has key {key!r}, which is not a token id") from None
            if not 0 <= col < vocab_size:
                raise ValueError(
                    f"lexical_weights[{i}] has token id {col} outside the vocabulary (0..{vocab_size - 1})"
                )
            cols.append(col)
            vals.append(float(value))
        indptr.append(len(cols))
    mat = sp.csr_matrix(
        (np.asarray(vals, dtype=np.float32), np.asarray(cols, dtype=np.int64), np.asarray(indptr, dtype=np.int64)),
        shape=(len(weights), vocab_size),
    )
    mat.sum_duplicates()
    return mat


def rows_to_csr(rows: list[tuple[np.ndarray, np.ndarray]], vocab_size: int) -> sp.csr_matrix:
    """Per-text ``(sorted ids, weights)`` pairs as a CSR matrix (no Python loop over tokens)."""
    lengths = np.fromiter((len(r[0]) for r in rows), dtype=np.int64, count=len(rows))
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    ids = np.concatenate([r[0] for r in rows]) if rows else np.zeros(0, np.int64)
    vals = np.concatenate([r[1] for r in rows]) if rows else np.zeros(0, np.float32)
    return sp.csr_matrix((vals.astype(np.float32), ids, indptr), shape=(len(rows), vocab_size))
