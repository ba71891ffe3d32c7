"""DenseIndex: inner-product search over dense vectors with faiss (exact flat, HNSW or IVF-PQ)."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np

from flagembed.index.ids import IdTable, load_ids
from flagembed.index.results import SearchResults, check_top_k, gather_results
from flagembed.index.storage import (
    MANIFEST,
    IndexFormatError,
    param,
    read_manifest,
    reading,
    write_index_dir,
    write_json,
)

logger = logging.getLogger(__name__)

DenseKind = Literal["flat", "hnsw", "ivfpq"]
DENSE_KINDS: tuple[str, ...] = get_args(DenseKind)
_DEFAULTS: dict[str, dict[str, Any]] = {
    "flat": {},
    "hnsw": {"m": 32, "ef_construction": 200, "ef_search": 128},
    "ivfpq": {"nlist": 256, "pq_m": 16, "nbits": 8, "nprobe": 16},
}


def _faiss() -> Any:
    try:
        import faiss
    except ImportError as exc:  # pragma: no cover - faiss is an extra
        raise ImportError('DenseIndex needs faiss: pip install "flagembed[faiss]" (faiss-cpu or faiss-gpu)') from exc
    return faiss


def as_matrix(x: Any, dim: int, what: str = "vectors") -> np.ndarray:
    """A C-contiguous float32 ``(N, dim)`` matrix; a 1-D vector becomes one row.

    Raises:
        ValueError: wrong shape, dimension, or non-finite values.
    """
    arr = np.asarray(x, dtype=np.float32)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] != dim:
        raise ValueError(f"{what} must have shape (N, {dim}), got {tuple(np.shape(x))}")
    if not np.isfinite(arr).all():
        bad = int(np.flatnonzero(~np.isfinite(arr).all(axis=1))[0])
        raise ValueError(f"{what}[{bad}] contains NaN or infinity")
    return np.ascontiguousarray(arr)


class DenseIndex:
    """Maximum inner-product search over dense vectors (cosine when vectors are normalized).

    ``kind="flat"`` is exact (faiss ``IndexFlatIP``); ``"hnsw"`` (options ``m``, ``ef_construction``,
    ``ef_search``) and ``"ivfpq"`` (``nlist``, ``pq_m``, ``nbits``, ``nprobe``; trained on the first
    ``add``) trade exactness for speed on large corpora. A flat index is searched on all GPUs when
    faiss-gpu is installed (``use_gpu=None`` decides automatically).

    Example:
        >>> index = DenseIndex(384)
        >>> index.add(["d1", "d2"], doc_vectors)
        >>> index.search(query_vectors, top_k=10).ids
    """

    def __init__(self, dim: int, *, kind: DenseKind = "flat", **options: Any) -> None:
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        if kind not in DENSE_KINDS:
            raise ValueError(f"unknown dense index kind {kind!r}; valid: {', '.join(DENSE_KINDS)}")
        self.dim = int(dim)
        self.kind: DenseKind = kind
        self.use_gpu: bool | None = options.pop("use_gpu", None)
        self.model_info: dict[str, Any] | None = options.pop("model_info", None)
        unknown = set(options) - set(_DEFAULTS[kind])
        if unknown:
            valid = sorted(_DEFAULTS[kind])
            raise ValueError(f"unknown options for a {kind!r} index: {sorted(unknown)}; valid: {valid}")
        self.options = {**_DEFAULTS[kind], **options}
        self._ids = IdTable()
        self._index = self._new_index()
        self._gpu_index: Any = None

    # ------------------------------------------------------------------ building
    def _new_index(self) -> Any:
        faiss = _faiss()
        o = self.options
        if self.kind == "flat":
            return faiss.IndexFlatIP(self.dim)
        if self.kind == "hnsw":
            index = faiss.IndexHNSWFlat(self.dim, int(o["m"]), faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = int(o["ef_construction"])
            index.hnsw.efSearch = int(o["ef_search"])
            return index
        if self.dim % int(o["pq_m"]):
            raise ValueError(f"ivfpq needs dim ({self.dim}) divisible by pq_m ({o['pq_m']})")
        quantizer = faiss.IndexFlatIP(self.dim)
        index = faiss.IndexIVFPQ(
            quantizer, self.dim, int(o["nlist"]), int(o["pq_m"]), int(o["nbits"]), faiss.METRIC_INNER_PRODUCT
        )
        index.own_fields = True
        quantizer.this.disown()  # the IVF index owns its quantizer now
        index.nprobe = int(o["nprobe"])
        index.set_direct_map_type(faiss.DirectMap.Hashtable)  # allows remove + reconstruct by id
        return index

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def ids(self) -> list[str]:
        """Document ids currently in the index."""
        return self._ids.alive_ids()

    def add(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        """Add documents. ``vectors`` is ``(N, dim)`` float32.

        Raises:
            ValueError: shape mismatch, duplicate ids, or too few vectors to train an IVF-PQ index.
            TypeError: an id is not a string.
        """
        mat = as_matrix(vectors, self.dim)
        new = self._ids.check_new(ids, len(mat))
        if not new:
            return
        if self.kind == "ivfpq" and not self._index.is_trained:
            need = max(int(self.options["nlist"]), 2 ** int(self.options["nbits"]))
            if len(mat) < need:
                raise ValueError(
                    f"an ivfpq index is trained on its first add and needs >= {need} vectors, got {len(mat)}; "
                    "use kind='flat' for small corpora or lower nlist/nbits"
                )
            self._index.train(mat)
        slots = self._ids.append(new)
        if self.kind == "ivfpq":
            self._index.add_with_ids(mat, slots)
        else:
            self._index.add(mat)
        self._gpu_index = None

    def remove(self, ids: Sequence[str]) -> int:
        """Remove documents by id; unknown ids are ignored. Returns how many were removed."""
        slots = self._ids.kill(ids)
        if len(slots) == 0:
            return 0
        faiss = _faiss()
        if self.kind == "flat":  # faiss compacts flat storage, keeping order: mirror it
            self._index.remove_ids(faiss.IDSelectorBatch(slots))
            self._ids.compact()
        elif self.kind == "ivfpq":  # the hashtable direct map only accepts an array selector
            self._index.remove_ids(faiss.IDSelectorArray(len(slots), faiss.swig_ptr(slots)))
        # hnsw cannot delete: dead slots stay as tombstones and are filtered at search time
        self._gpu_index = None
        return len(slots)

    # ------------------------------------------------------------------ searching
    def _searcher(self) -> Any:
        if self.kind != "flat" or self.use_gpu is False:
            return self._index
        faiss = _faiss()
        gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
        if gpus < 1 or not hasattr(faiss, "index_cpu_to_all_gpus"):
            if self.use_gpu:
                logger.warning("use_gpu=True but faiss has no GPU support here; searching on CPU")
            return self._index
        if self._gpu_index is None:
            self._gpu_index = faiss.index_cpu_to_all_gpus(self._index)
        return self._gpu_index

    def search(self, queries: np.ndarray, top_k: int = 10) -> SearchResults:
        """The ``top_k`` documents with the largest inner product per query (exact for ``flat``).

        Raises:
            ValueError: bad ``top_k`` or query shape.
        """
        top_k = check_top_k(top_k)
        q = as_matrix(queries, self.dim, "queries")
        if len(self) == 0 or len(q) == 0:
            return SearchResults.empty(len(q))
        k = min(top_k + self._ids.num_dead, self._index.ntotal)
        if self.kind == "ivfpq":
            k = min(top_k, len(self))
        scores, slots = self._searcher().search(q, k)
        alive = self._ids.alive
        valid = (slots >= 0) & alive[np.clip(slots, 0, None)]
        out = gather_results(np.where(valid, slots, -1), scores, self._ids.labels)
        out.ids = [row[:top_k] for row in out.ids]
        out.scores = [row[:top_k] for row in out.scores]
        return out

    def vectors(self, ids: Sequence[str]) -> np.ndarray:
        """Stored vectors of ``ids`` (approximate for ``ivfpq``), e.g. to rescore candidates.

        Raises:
            KeyError: an id is not in the index.
        """
        slots = self._ids.slots(ids)
        if len(slots) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self.kind == "ivfpq":
            return np.stack([self._index.reconstruct(int(s)) for s in slots])
        return self._index.reconstruct_batch(slots)

    # ------------------------------------------------------------------ persistence
    def _params(self) -> dict[str, Any]:
        return {"dim": self.dim, "kind": self.kind, "options": self.options, "count": len(self)}

    def _write(self, tmp: Path) -> None:
        faiss = _faiss()
        faiss.write_index(self._index, str(tmp / "index.faiss"))
        write_json(tmp / "ids.json", self._ids.state())

    def save(self, directory: str | os.PathLike[str]) -> None:
        """Write the index to ``directory`` atomically (temporary sibling, then rename)."""
        write_index_dir(directory, "dense", self._params(), self._write, self.model_info)

    @classmethod
    def load(cls, directory: str | os.PathLike[str], *, model_info: Mapping[str, Any] | None = None) -> DenseIndex:
        """Read an index written by :meth:`save`.

        Args:
            model_info: the model configuration that will embed queries; refused if it differs.

        Raises:
            IndexFormatError: missing, corrupted or inconsistent files (names the file).
            IndexMismatchError: ``model_info`` differs from the one recorded at build time.
        """
        path = Path(directory)
        manifest = read_manifest(path, "dense", model_info, required=REQUIRED_FILES)
        options = param(manifest, "options", dict, path)
        try:
            obj = cls(param(manifest, "dim", int, path), kind=param(manifest, "kind", str, path), **options)
        except (TypeError, ValueError) as exc:
            raise IndexFormatError(f"{path}/{MANIFEST} has invalid params: {exc}") from exc
        obj.model_info = manifest.get("model")
        obj._ids = load_ids(path / "ids.json")
        faiss_file = path / "index.faiss"
        with reading(faiss_file, RuntimeError):  # faiss reports unreadable files as RuntimeError
            obj._index = _faiss().read_index(str(faiss_file))
        _check_faiss(obj, faiss_file)
        return obj


REQUIRED_FILES = ("index.faiss", "ids.json")
_FAISS_TYPES = {"flat": ("IndexFlatIP", "IndexFlat"), "hnsw": ("IndexHNSWFlat",), "ivfpq": ("IndexIVFPQ",)}
_CHECK_ROWS = 1 << 16


def _check_faiss(obj: DenseIndex, where: Path) -> None:
    """A loaded faiss index must be the recorded kind, inner-product, of the recorded dim, one vector
    per id, and hold only finite numbers.

    Raises:
        IndexFormatError: names the file and what disagrees.
    """
    faiss, index = _faiss(), obj._index
    name = type(index).__name__
    if name not in _FAISS_TYPES[obj.kind] or index.metric_type != faiss.METRIC_INNER_PRODUCT:
        raise IndexFormatError(f"{where} holds a {name} (metric {index.metric_type}), not a {obj.kind!r} IP index")
    expected = obj._ids.num_slots if obj.kind != "ivfpq" else len(obj._ids)
    if index.ntotal != expected or index.d != obj.dim:
        raise IndexFormatError(
            f"{where} is inconsistent: faiss holds {index.ntotal} vectors of dim {index.d} "
            f"for {expected} ids of dim {obj.dim}"
        )
    if obj.kind == "ivfpq":  # codes are bytes; the floats are the coarse and product-quantizer centroids
        coarse = faiss.downcast_index(index.quantizer)
        parts = [coarse.reconstruct_n(0, coarse.ntotal), faiss.vector_to_array(index.pq.centroids)]
    else:
        n = index.ntotal
        parts = (index.reconstruct_n(s, min(_CHECK_ROWS, n - s)) for s in range(0, n, _CHECK_ROWS))
    for block in parts:
        if not np.isfinite(block).all():
            raise IndexFormatError(f"{where} is corrupted: it holds NaN or infinite values")
