"""MultiVectorIndex: ColBERT late-interaction (MaxSim) search, exact over all documents or over candidates."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flagembed.index.ids import IdTable, load_ids
from flagembed.index.results import SearchResults, check_top_k, gather_results, top_k_rows
from flagembed.index.storage import IndexFormatError, param, read_manifest, reading, write_index_dir, write_json
from flagembed.models import maxsim, pad_vectors

_BLOCK_TOKENS = 1 << 15  # padded document tokens per scoring block
_PRODUCTS = 1 << 25  # query-token × document-token products per scoring step


def as_vector_list(vectors: Any, dim: int, lengths: Any = None, what: str = "vectors") -> list[np.ndarray]:
    """Multi-vectors as a list of float32 ``(Li, dim)`` arrays from a list, or a padded array plus ``lengths``.

    Raises:
        ValueError: wrong shapes or lengths.
    """
    if lengths is not None:
        arr = np.asarray(vectors, dtype=np.float32)
        lens = np.asarray(lengths, dtype=np.int64)
        if arr.ndim != 3 or arr.shape[2] != dim or len(lens) != len(arr) or (lens > arr.shape[1]).any():
            raise ValueError(f"{what} must be padded (N, L, {dim}) with N lengths <= L, got {arr.shape}, {lens.shape}")
        return [arr[i, : lens[i]] for i in range(len(arr))]
    if isinstance(vectors, np.ndarray) and vectors.ndim == 2:
        vectors = [vectors]
    out = []
    for i, v in enumerate(vectors):
        a = np.asarray(v, dtype=np.float32)
        if a.ndim != 2 or a.shape[1] != dim:
            raise ValueError(f"{what}[{i}] must have shape (L, {dim}), got {a.shape}")
        out.append(a)
    return out


class MultiVectorIndex:
    """ColBERT search: ``score = sum_i max_j q_i·d_j / len(q)`` (BGE-M3's colbert score).

    ``search`` scores every document exactly, in length-sorted padded blocks with batched matrix
    products (fine up to ~10^5 documents, fast on a GPU); ``search(..., candidates=...)`` rescores
    only given candidates (e.g. a dense index's top hits) for large corpora.
    """

    def __init__(self, dim: int, *, device: str | torch.device | None = None) -> None:
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        self.dim = int(dim)
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.model_info: dict[str, Any] | None = None
        self._ids = IdTable()
        self._vectors: list[np.ndarray] = []
        self._blocks: list[tuple[np.ndarray, torch.Tensor, torch.Tensor]] | None = None

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def ids(self) -> list[str]:
        return self._ids.alive_ids()

    def add(self, ids: Sequence[str], vectors: Any, lengths: Any = None) -> None:
        """Add documents: a list of ``(Li, dim)`` arrays, or a padded ``(N, L, dim)`` array with ``lengths``."""
        vecs = as_vector_list(vectors, self.dim, lengths)
        new = self._ids.check_new(ids, len(vecs))
        self._ids.append(new)
        self._vectors.extend(np.ascontiguousarray(v) for v in vecs)
        self._blocks = None

    def remove(self, ids: Sequence[str]) -> int:
        """Remove documents by id (unknown ids ignored); returns how many were removed."""
        slots = self._ids.kill(ids)
        if len(slots):
            self._vectors = [self._vectors[i] for i in self._ids.compact()]
            self._blocks = None
        return len(slots)

    def _doc_blocks(self) -> list[tuple[np.ndarray, torch.Tensor, torch.Tensor]]:
        """Documents sorted by length, grouped into padded blocks of about ``_BLOCK_TOKENS`` tokens."""
        if self._blocks is None:
            lengths = np.fromiter((len(v) for v in self._vectors), dtype=np.int64, count=len(self._vectors))
            order = np.argsort(lengths, kind="stable")
            self._blocks = []
            start = 0
            while start < len(order):
                width = max(1, int(lengths[order[start]]))
                end = start + 1
                while end < len(order) and (end - start + 1) * max(width, int(lengths[order[end]])) <= _BLOCK_TOKENS:
                    width = max(width, int(lengths[order[end]]))
                    end += 1
                slots = order[start:end]
                pad, lens = pad_vectors([self._vectors[i] for i in slots], self.dim)
                self._blocks.append(
                    (slots, torch.from_numpy(pad).to(self.device), torch.from_numpy(lens).to(self.device))
                )
                start = end
        return self._blocks

    def score_all(self, queries: Any, lengths: Any = None) -> np.ndarray:
        """Exact MaxSim of every query with every document: ``(num_queries, num_docs)`` in slot order."""
        qs = as_vector_list(queries, self.dim, lengths, "queries")
        out = np.zeros((len(qs), len(self._vectors)), dtype=np.float32)
        if not qs or not self._vectors:
            return out
        q_pad, q_len = pad_vectors(qs, self.dim)
        qt, ql = torch.from_numpy(q_pad).to(self.device), torch.from_numpy(q_len).to(self.device)
        with torch.inference_mode():
            for slots, block, block_len in self._doc_blocks():
                step = max(1, _PRODUCTS // max(1, q_pad.shape[1] * block.shape[0] * block.shape[1]))
                for s in range(0, len(qs), step):
                    scores = maxsim(qt[s : s + step], ql[s : s + step], block, block_len)
                    out[s : s + step, slots] = scores.cpu().numpy()
        return out

    def search(
        self,
        queries: Any,
        top_k: int = 10,
        *,
        lengths: Any = None,
        candidates: Sequence[Sequence[str]] | None = None,
    ) -> SearchResults:
        """Top-``top_k`` documents per query by exact MaxSim, over all documents or per-query ``candidates``."""
        top_k = check_top_k(top_k)
        qs = as_vector_list(queries, self.dim, lengths, "queries")
        if len(self) == 0:
            return SearchResults.empty(len(qs))
        if candidates is None:
            idx, vals = top_k_rows(self.score_all(qs), top_k)
            return gather_results(idx, vals, self._ids.labels)
        if len(candidates) != len(qs):
            raise ValueError(f"got {len(candidates)} candidate lists for {len(qs)} queries")
        out = SearchResults()
        for q, cands in zip(qs, candidates):
            known = [c for c in dict.fromkeys(cands) if c in self._ids.slot_of]
            row = self.scores([q], known)[0] if known else np.zeros(0, np.float32)
            idx, vals = top_k_rows(row[None, :], top_k)
            res = gather_results(idx, vals, known)
            out.ids += res.ids
            out.scores += res.scores
        return out

    def scores(self, queries: Any, ids: Sequence[str], lengths: Any = None) -> np.ndarray:
        """Exact MaxSim ``(num_queries, len(ids))`` of the given documents."""
        qs = as_vector_list(queries, self.dim, lengths, "queries")
        docs = [self._vectors[i] for i in self._ids.slots(ids)]
        if not qs or not docs:
            return np.zeros((len(qs), len(docs)), dtype=np.float32)
        q_pad, q_len = pad_vectors(qs, self.dim)
        d_pad, d_len = pad_vectors(docs, self.dim)
        t = [torch.from_numpy(x).to(self.device) for x in (q_pad, q_len, d_pad, d_len)]
        with torch.inference_mode():
            return maxsim(*t).cpu().numpy()

    # ------------------------------------------------------------------ persistence
    def _write(self, tmp: Path) -> None:
        lengths = np.fromiter((len(v) for v in self._vectors), dtype=np.int64, count=len(self._vectors))
        flat = np.concatenate(self._vectors) if self._vectors else np.zeros((0, self.dim), np.float32)
        np.save(tmp / "vectors.npy", flat)
        np.save(tmp / "lengths.npy", lengths)
        write_json(tmp / "ids.json", self._ids.state())

    def save(self, directory: str | os.PathLike[str]) -> None:
        """Write the index to ``directory`` atomically."""
        write_index_dir(directory, "multivector", {"dim": self.dim, "count": len(self)}, self._write, self.model_info)

    @classmethod
    def load(
        cls,
        directory: str | os.PathLike[str],
        *,
        model_info: Mapping[str, Any] | None = None,
        device: str | torch.device | None = None,
    ) -> MultiVectorIndex:
        """Read an index written by :meth:`save` (see :meth:`DenseIndex.load` for the checks).

        Raises:
            IndexFormatError: missing, corrupted or inconsistent files, or NaN / infinite vectors (names the file).
            IndexMismatchError: ``model_info`` differs from the one recorded at build time.
        """
        path = Path(directory)
        manifest = read_manifest(path, "multivector", model_info, required=REQUIRED_FILES)
        obj = cls(param(manifest, "dim", int, path), device=device)
        obj.model_info = manifest.get("model")
        obj._ids = load_ids(path / "ids.json")
        with reading(path / "vectors.npy", ValueError, OSError, EOFError):
            flat = np.load(path / "vectors.npy", allow_pickle=False)
        with reading(path / "lengths.npy", ValueError, OSError, EOFError):
            lengths = np.load(path / "lengths.npy", allow_pickle=False)
        if flat.ndim != 2 or flat.shape[1] != obj.dim or flat.dtype.kind != "f":
            raise IndexFormatError(f"{path / 'vectors.npy'} must hold float (N, {obj.dim}) vectors, got {flat.shape}")
        if not np.isfinite(flat).all():
            raise IndexFormatError(f"{path / 'vectors.npy'} is corrupted: it holds NaN or infinite values")
        if lengths.ndim != 1 or lengths.dtype.kind not in "iu" or (lengths < 0).any():
            raise IndexFormatError(f"{path / 'lengths.npy'} must hold one non-negative integer per document")
        if len(lengths) != obj._ids.num_slots or int(lengths.sum()) != len(flat):
            raise IndexFormatError(f"{path} is inconsistent: vectors, lengths and ids do not agree")
        flat = flat.astype(np.float32, copy=False)
        obj._vectors = list(np.split(flat, np.cumsum(lengths)[:-1])) if len(lengths) else []
        return obj


REQUIRED_FILES = ("vectors.npy", "lengths.npy", "ids.json")
