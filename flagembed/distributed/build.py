"""Indexes from encoded shards: an in-process HybridSearcher (saved as by `index build`) or a Milvus store."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from flagembed.distributed.shards import ShardData, ShardError, load_shards
from flagembed.index import DenseIndex, DocStore, HybridSearcher, SparseIndex
from flagembed.index.identity import open_recorded_model
from flagembed.index.milvus import MilvusStore, check_same_model
from flagembed.inference import Embedder


def shard_embedder(data: ShardData, where: Path, embedder: Embedder | None = None, **kwargs: Any) -> Embedder:
    """The model the shards were encoded with (``embedder`` is checked against it; else it is reopened)."""
    recorded = data.manifest["job"]["model"]
    if embedder is None:
        return open_recorded_model(recorded, data.manifest.get("source"), where, **kwargs)
    check_same_model(recorded, embedder, where)
    return embedder


def searcher_from_shards(
    directory: str | os.PathLike[str], embedder: Embedder | None = None, *, dense_kind: str = "flat", **kwargs: Any
) -> HybridSearcher:
    """A HybridSearcher over every shard (dense and/or sparse, documents when stored), without re-encoding.

    Raises:
        ShardError: an unfinished or changed shard folder, or repeated ids.
    """
    where = Path(directory)
    data = load_shards(where)
    model = shard_embedder(data, where, embedder, **kwargs)
    info = data.manifest["job"]["model"]
    dense = sparse = None
    if data.dense is not None:
        dense = DenseIndex(data.dense.shape[1], kind=dense_kind)  # type: ignore[arg-type]
        dense.add(data.ids, data.dense)
    if data.sparse is not None:
        sparse = SparseIndex(getattr(model, "vocab_size", None))
        sparse.add(data.ids, data.sparse)
    if dense is None and sparse is None:
        raise ShardError(f"{where}: the shards hold neither dense nor sparse vectors")
    docs = None
    if data.docs is not None:
        docs = DocStore()
        docs.add(data.ids, data.docs)
    searcher = HybridSearcher(model, dense=dense, sparse=sparse, docs=docs)
    for ix in searcher.indexes.values():
        ix.model_info = info
    return searcher


def store_from_shards(
    directory: str | os.PathLike[str],
    store: str | os.PathLike[str],
    embedder: Embedder | None = None,
    *,
    overwrite: bool = False,
    batch: int = 10_000,
    **kwargs: Any,
) -> MilvusStore:
    """Create a Milvus collection and insert every shard's vectors and documents, ``batch`` rows at a time."""
    where = Path(directory)
    data = load_shards(where)
    model = shard_embedder(data, where, embedder, **kwargs)
    modes = [m for m, part in (("dense", data.dense), ("sparse", data.sparse)) if part is not None]
    milvus = MilvusStore.create(store, model, modes=modes, overwrite=overwrite)
    try:
        for lo in range(0, len(data), batch):
            hi = lo + batch
            milvus.add_encoded(
                data.ids[lo:hi],
                dense=data.dense[lo:hi] if data.dense is not None else None,
                sparse=data.sparse[lo:hi] if data.sparse is not None else None,
                docs=data.docs[lo:hi] if data.docs is not None else None,
            )
    except BaseException:
        milvus.close()
        raise
    return milvus
