"""SparseIndex: exact top-k over lexical weights with sparse matrix products (an inverted index in CSR)."""

from __future__ import annotations

import os
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from flagembed.index.ids import IdTable, load_ids
from flagembed.index.results import SearchResults, check_top_k, sparse_top_k
from flagembed.index.storage import IndexFormatError, param, read_manifest, reading, write_index_dir, write_json

_QUERY_CHUNK = 256


def as_csr(weights: Any, vocab_size: int | None, what: str = "weights") -> sp.csr_matrix:
    """Lexical weights as a float32 CSR matrix: a scipy sparse matrix, or a list of ``{str(id): w}`` dicts.

    Raises:
        TypeError: neither form.
        ValueError: a token id outside the vocabulary, or a width that differs from ``vocab_size``.
    """
    if sp.issparse(weights):
        mat = sp.csr_matrix(weights, dtype=np.float32)
        if vocab_size is not None and mat.shape[1] != vocab_size:
            raise ValueError(f"{what} have {mat.shape[1]} columns; this index has vocab_size {vocab_size}")
        return mat
    if isinstance(weights, Mapping):
        weights = [weights]
    if not isinstance(weights, Sequence) or isinstance(weights, str):
        raise TypeError(f"{what} must be a scipy sparse matrix or a list of {{token_id: weight}} dicts")
    width = vocab_size
    if width is None:
        width = 1 + max((int(k) for row in weights if isinstance(row, Mapping) for k in row), default=-1)
    indptr, cols, vals = [0], [], []
    for i, row in enumerate(weights):
        if not isinstance(row, Mapping):
            raise TypeError(f"{what}[{i}] must be a dict of token id -> weight, got {type(row).__name__}")
        for key, value in row.items():
            col = int(key)
            if not 0 <= col < width:
                raise ValueError(f"{what}[{i}] has token id {col} outside the vocabulary (0..{width - 1})")
            cols.append(col)
            vals.append(float(value))
        indptr.append(len(cols))
    mat = sp.csr_matrix(
        (np.asarray(vals, np.float32), np.asarray(cols, np.int64), np.asarray(indptr)), (len(weights), width)
    )
    mat.sum_duplicates()
    return mat


class SparseIndex:
    """Exact lexical search: score = sum over shared tokens of ``w_query * w_doc`` (BGE-M3's sparse score).

    Documents live in a CSR matrix (rows = documents); a query batch is scored against all of them
    with one sparse product, so only documents sharing a token with the query cost anything.
    Results hold only documents that share at least one token with the query.
    """

    def __init__(self, vocab_size: int | None = None) -> None:
        self.vocab_size = vocab_size
        self.model_info: dict[str, Any] | None = None
        self._ids = IdTable()
        self._matrix: sp.csr_matrix | None = None
        self._pending: list[sp.csr_matrix] = []

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def ids(self) -> list[str]:
        return self._ids.alive_ids()

    def _docs(self) -> sp.csr_matrix:
        if self._pending:
            parts = ([self._matrix] if self._matrix is not None else []) + self._pending
            self._matrix = sp.vstack(parts, format="csr")
            self._pending = []
        if self._matrix is None:
            self._matrix = sp.csr_matrix((0, self.vocab_size or 0), dtype=np.float32)
        return self._matrix

    def add(self, ids: Sequence[str], weights: Any) -> None:
        """Add documents' lexical weights (CSR ``(N, vocab)`` or reference-style dicts)."""
        mat = as_csr(weights, self.vocab_size)
        new = self._ids.check_new(ids, mat.shape[0])
        if not new:
            return
        if self.vocab_size is None:
            self.vocab_size = mat.shape[1]
        self._ids.append(new)
        self._pending.append(mat)

    def remove(self, ids: Sequence[str]) -> int:
        """Remove documents by id (unknown ids ignored); returns how many were removed."""
        slots = self._ids.kill(ids)
        if len(slots):
            docs = self._docs()
            self._matrix = docs[self._ids.compact()]
        return len(slots)

    def search(self, queries: Any, top_k: int = 10) -> SearchResults:
        """Top-``top_k`` documents per query by exact sparse inner product (documents with no shared token omitted;
        ties at the k-th score break by insertion order)."""
        top_k = check_top_k(top_k)
        q = as_csr(queries, self.vocab_size, "queries")
        if len(self) == 0:
            return SearchResults.empty(q.shape[0])
        return sparse_top_k(q, self._docs().T.tocsr(), self._ids.labels, top_k, _QUERY_CHUNK)

    def scores(self, queries: Any, ids: Sequence[str]) -> np.ndarray:
        """Exact scores ``(num_queries, len(ids))`` of the given documents (0 where nothing is shared)."""
        q = as_csr(queries, self.vocab_size, "queries")
        docs = self._docs()[self._ids.slots(ids)]
        return np.asarray((q @ docs.T).todense(), dtype=np.float32)

    # ------------------------------------------------------------------ persistence
    def _write(self, tmp: Path) -> None:
        sp.save_npz(tmp / "weights.npz", self._docs(), compressed=False)
        write_json(tmp / "ids.json", self._ids.state())

    def save(self, directory: str | os.PathLike[str]) -> None:
        """Write the index to ``directory`` atomically."""
        params = {"vocab_size": self.vocab_size, "count": len(self)}
        write_index_dir(directory, "sparse", params, self._write, self.model_info)

    @classmethod
    def load(cls, directory: str | os.PathLike[str], *, model_info: Mapping[str, Any] | None = None) -> SparseIndex:
        """Read an index written by :meth:`save` (see :meth:`DenseIndex.load` for the checks).

        Raises:
            IndexFormatError: missing, corrupted or inconsistent files, or weights that are negative,
                NaN or infinite (names the file).
            IndexMismatchError: ``model_info`` differs from the one recorded at build time.
        """
        path = Path(directory)
        manifest = read_manifest(path, "sparse", model_info, required=REQUIRED_FILES)
        vocab = manifest["params"].get("vocab_size")
        if vocab is not None:
            vocab = param(manifest, "vocab_size", int, path)
        obj = cls(vocab)
        obj.model_info = manifest.get("model")
        obj._ids = load_ids(path / "ids.json")
        weights = path / "weights.npz"
        with reading(weights, ValueError, OSError, KeyError, EOFError, zipfile.BadZipFile):
            obj._matrix = sp.load_npz(weights).tocsr()
            obj._matrix.check_format(full_check=True)
        mat = obj._matrix
        if mat.shape[0] != obj._ids.num_slots or (vocab is not None and mat.shape[1] != vocab):
            raise IndexFormatError(
                f"{weights} is inconsistent: shape {mat.shape} for {obj._ids.num_slots} ids, vocab_size {vocab}"
            )
        if mat.dtype.kind != "f" or not np.isfinite(mat.data).all() or (mat.data < 0).any():
            raise IndexFormatError(f"{weights} is corrupted: lexical weights must be finite and >= 0")
        return obj


REQUIRED_FILES = ("weights.npz", "ids.json")
