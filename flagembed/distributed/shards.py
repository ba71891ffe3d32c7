"""Encoded shards on disk: one Parquet file per input shard (rows sorted by id) plus ``manifest.json``.

Columns: ``id`` (string), ``row`` (record number in its input file), ``title``/``text`` (when stored),
``dense`` (fixed-size list of float32), ``sparse_ids``/``sparse_weights`` (BGE-M3 lexical weights).
The manifest records the job (model identity, outputs, inputs), and per finished shard its input range,
row count and SHA-256, so a re-run skips exactly the shards that are complete and unchanged.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from flagembed._io import atomic_write, save_json

MANIFEST = "manifest.json"
FORMAT = "flagembed-shards"
VERSION = 1


class ShardError(ValueError):
    """Shards that are missing, changed, of another job, or hold repeated ids."""


def shard_bytes(
    ids: Sequence[str],
    rows: Sequence[int],
    docs: Sequence[Mapping[str, Any]] | None,
    dense: np.ndarray | None,
    sparse: sp.csr_matrix | None,
) -> bytes:
    """One shard as Parquet bytes, rows sorted by id (``docs``: store title and text; ``None``: not stored)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    order = sorted(range(len(ids)), key=lambda i: ids[i])
    cols: dict[str, Any] = {
        "id": pa.array([ids[i] for i in order], pa.string()),
        "row": pa.array([rows[i] for i in order], pa.int64()),
    }
    if docs is not None:
        cols["title"] = pa.array([docs[i].get("title") or "" for i in order], pa.string())
        cols["text"] = pa.array([docs[i]["text"] for i in order], pa.string())
    if dense is not None:
        d = np.ascontiguousarray(dense[order], dtype=np.float32)
        cols["dense"] = pa.FixedSizeListArray.from_arrays(pa.array(d.reshape(-1)), d.shape[1])
    if sparse is not None:
        s = sp.csr_matrix(sparse)[order]
        offsets = pa.array(s.indptr.astype(np.int32))
        cols["sparse_ids"] = pa.ListArray.from_arrays(offsets, pa.array(s.indices.astype(np.int32)))
        cols["sparse_weights"] = pa.ListArray.from_arrays(offsets, pa.array(s.data.astype(np.float32)))
    buf = io.BytesIO()
    pq.write_table(pa.table(cols), buf)
    return buf.getvalue()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_shard(directory: Path, name: str, data: bytes) -> str:
    """Write one shard atomically; returns its SHA-256."""
    with atomic_write(directory / name) as f:
        f.write(data)
    return hashlib.sha256(data).hexdigest()


def read_manifest(directory: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The manifest of a shard folder, or ``None`` when the folder has none.

    Raises:
        ShardError: the manifest is not a flagembed shard manifest.
    """
    path = Path(directory) / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ShardError(f"{path} is not valid JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ShardError(f"{path} is not a flagembed shard manifest")
    if manifest.get("version") != VERSION:
        raise ShardError(f"{path} has version {manifest.get('version')!r}; this flagembed reads version {VERSION}")
    return manifest


def write_manifest(directory: Path, manifest: Mapping[str, Any]) -> None:
    save_json(directory / MANIFEST, dict(manifest))


def finished(directory: Path, manifest: Mapping[str, Any], job: Mapping[str, Any]) -> dict[str, Any]:
    """The manifest's finished shards whose file is still there with its recorded SHA-256 (others re-run).

    Raises:
        ShardError: the folder holds shards of another job (other model, outputs, inputs or shard size).
    """
    if manifest.get("job") != job:
        old, new = manifest.get("job") or {}, dict(job)
        diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        raise ShardError(
            f"{directory} holds shards of another job (differs in: {', '.join(diff)}); "
            "use a new output folder or pass overwrite=True (flagembed embed --ray --overwrite)"
        )
    done = {}
    for name, entry in (manifest.get("shards") or {}).items():
        path = directory / name
        if path.is_file() and path.stat().st_size == entry.get("bytes") and sha256_file(path) == entry.get("sha256"):
            done[name] = entry
    return done


@dataclass
class ShardData:
    """Every encoded row of a shard folder, in id order."""

    ids: list[str]
    dense: np.ndarray | None
    sparse: sp.csr_matrix | None
    docs: list[dict[str, Any]] | None
    manifest: dict[str, Any]

    def __len__(self) -> int:
        return len(self.ids)


def load_shards(directory: str | os.PathLike[str], *, vocab_size: int | None = None) -> ShardData:
    """Read a complete shard folder into memory, rows in id order, checking every shard and id uniqueness.

    Raises:
        ShardError: no manifest, an unfinished job, a missing or changed shard, or a repeated id
            (names both input files and record numbers).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    directory = Path(directory)
    manifest = read_manifest(directory)
    if manifest is None:
        raise ShardError(f"{directory} has no {MANIFEST}: not a shard folder written by flagembed embed --ray")
    shards = manifest.get("shards") or {}
    if not manifest.get("complete") or len(shards) != manifest.get("total"):
        raise ShardError(
            f"{directory}: the encoding job is unfinished ({len(shards)}/{manifest.get('total')} shards); "
            "re-run it to finish the missing shards"
        )
    tables = []
    for name in sorted(shards):
        path = directory / name
        if not path.is_file() or sha256_file(path) != shards[name]["sha256"]:
            raise ShardError(f"{path} is missing or changed since it was written; re-run the encoding job")
        tables.append(pq.read_table(path).append_column("shard", pa.array([name] * shards[name]["count"])))
    table = pa.concat_tables(tables) if tables else None
    if table is None or table.num_rows == 0:
        return ShardData([], None, None, None, manifest)
    order = np.argsort(np.asarray(table.column("id").to_pylist(), dtype=object), kind="stable")
    table = table.take(pa.array(order))
    ids = table.column("id").to_pylist()
    _check_unique(ids, table, shards)
    names = table.column_names
    dense = None
    if "dense" in names:
        col = table.column("dense").combine_chunks()
        dense = col.flatten().to_numpy().reshape(len(ids), col.type.list_size).astype(np.float32)
    sparse = None
    if "sparse_ids" in names:
        sid = table.column("sparse_ids").combine_chunks()
        sw = table.column("sparse_weights").combine_chunks()
        indptr = np.asarray(sid.offsets.to_numpy(), dtype=np.int64)
        indices = sid.flatten().to_numpy()
        cols = vocab_size or int(manifest["job"].get("vocab_size") or (indices.max() + 1 if len(indices) else 1))
        sparse = sp.csr_matrix((sw.flatten().to_numpy(), indices, indptr), shape=(len(ids), cols), dtype=np.float32)
    docs = None
    if "text" in names:
        titles, texts = table.column("title").to_pylist(), table.column("text").to_pylist()
        docs = [{"title": t, "text": x} for t, x in zip(titles, texts)]
    return ShardData(ids, dense, sparse, docs, manifest)


def _check_unique(ids: list[str], table: Any, shards: Mapping[str, Any]) -> None:
    for i in range(1, len(ids)):
        if ids[i] == ids[i - 1]:
            where = []
            for j in (i - 1, i):
                shard = table.column("shard")[j].as_py()
                where.append(f"{shards[shard]['file']} record {table.column('row')[j].as_py()}")
            raise ShardError(f"id {ids[i]!r} appears twice: {where[0]} and {where[1]}")

