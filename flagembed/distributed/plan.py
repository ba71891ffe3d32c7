"""Corpus files → shards (file, byte or row range), and the records of one shard.

A shard is a contiguous range of one input file: JSONL shards are byte ranges (found in one scan of the file,
so a worker seeks straight to its range), Parquet shards are row ranges. The plan depends only on the input
files and the shard size, so a re-run finds the same shards and can skip the finished ones.
Paths may be local or object-store URIs (``s3://``, ``gs://``, ...) read through ``pyarrow.fs``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

FORMATS = {".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet"}


@dataclass(frozen=True)
class Shard:
    """Records ``first_row .. first_row + rows - 1`` of ``file`` (0-based); JSONL shards: bytes ``[start, end)``."""

    index: int
    file: str
    format: str
    first_row: int
    rows: int
    start: int = 0
    end: int = 0

    @property
    def name(self) -> str:
        return f"shard-{self.index:06d}.parquet"

    def where(self) -> str:
        """``file rows a-b`` for messages."""
        return f"{self.file} rows {self.first_row}-{self.first_row + self.rows - 1}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def filesystem(path: str) -> tuple[Any, str]:
    """``(pyarrow FileSystem, path inside it)`` for a local path or an object-store URI."""
    from pyarrow import fs

    if "://" in path:
        return fs.FileSystem.from_uri(path)
    return fs.LocalFileSystem(), os.path.abspath(path)


def expand_inputs(inputs: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[str]:
    """Input files in a stable order: files as given, folders expanded to their ``.jsonl``/``.parquet`` files.

    Raises:
        FileNotFoundError: an input does not exist.
        ValueError: no input, an unsupported file type, or a folder without corpus files.
    """
    from pyarrow import fs

    items = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    if not items:
        raise ValueError("no input files given")
    out: list[str] = []
    for item in items:
        path = os.fspath(item)
        filesys, inner = filesystem(path)
        info = filesys.get_file_info(inner)
        if info.type == fs.FileType.NotFound:
            raise FileNotFoundError(f"input {path} does not exist")
        if info.type == fs.FileType.Directory:
            found = sorted(
                f.path for f in filesys.get_file_info(fs.FileSelector(inner)) if _suffix(f.path) in FORMATS
            )
            if not found:
                raise ValueError(f"input folder {path} holds no .jsonl or .parquet files")
            prefix = path[: len(path) - len(path.split("://", 1)[1])] if "://" in path else ""
            out.extend(prefix + f for f in found)
        else:
            if _suffix(path) not in FORMATS:
                raise ValueError(f"input {path}: unsupported file type; valid: {', '.join(FORMATS)}")
            out.append(path)
    return out


def file_identity(path: str) -> dict[str, Any]:
    """Size and modification time of an input (what a re-run compares to decide the shards are still valid)."""
    filesys, inner = filesystem(path)
    info = filesys.get_file_info(inner)
    mtime = info.mtime.timestamp() if info.mtime is not None else None
    return {"path": path, "size": info.size, "mtime": mtime}


def plan_shards(files: Sequence[str], shard_size: int) -> list[Shard]:
    """Cut every file into shards of at most ``shard_size`` records (blank JSONL lines are not records).

    Raises:
        ValueError: ``shard_size`` < 1.
    """
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    shards: list[Shard] = []
    for path in files:
        if FORMATS[_suffix(path)] == "parquet":
            shards.extend(_parquet_shards(path, shard_size, len(shards)))
        else:
            shards.extend(_jsonl_shards(path, shard_size, len(shards)))
    return shards


def _jsonl_shards(path: str, shard_size: int, first_index: int) -> Iterator[Shard]:
    filesys, inner = filesystem(path)
    pos, row, start, first, count = 0, 0, 0, 0, 0
    index = first_index
    with filesys.open_input_stream(inner) as f:
        for line in _lines(f):
            if line.strip():
                if count == 0:
                    start, first = pos, row
                count += 1
                row += 1
            pos += len(line)
            if count == shard_size:
                yield Shard(index, path, "jsonl", first, count, start, pos)
                index, count = index + 1, 0
    if count:
        yield Shard(index, path, "jsonl", first, count, start, pos)


def _parquet_shards(path: str, shard_size: int, first_index: int) -> Iterator[Shard]:
    import pyarrow.parquet as pq

    filesys, inner = filesystem(path)
    with filesys.open_input_file(inner) as f:
        total = pq.ParquetFile(f).metadata.num_rows
    for i, first in enumerate(range(0, total, shard_size)):
        yield Shard(first_index + i, path, "parquet", first, min(shard_size, total - first))


def _lines(stream: Any, chunk: int = 1 << 20) -> Iterator[bytes]:
    """Lines of a binary stream, each with its newline (the last one may lack it)."""
    rest = b""
    while True:
        data = stream.read(chunk)
        if not data:
            break
        rest += data
        parts = rest.split(b"\n")
        rest = parts.pop()
        for p in parts:
            yield p + b"\n"
    if rest:
        yield rest


def read_shard(shard: Shard) -> tuple[list[str], list[dict[str, Any]], list[int]]:
    """``(ids, documents, record numbers)`` of one shard; documents are ``{"title", "text"}`` dicts.

    Raises:
        ValueError: a record that is not JSON, or lacks an id or a string text (names file and record number).
    """
    filesys, inner = filesystem(shard.file)
    if shard.format == "parquet":
        import pyarrow.parquet as pq

        with filesys.open_input_file(inner) as f:
            table = pq.read_table(f).slice(shard.first_row, shard.rows)
        records: list[Any] = table.to_pylist()
    else:
        with filesys.open_input_file(inner) as f:
            f.seek(shard.start)
            data = f.read(shard.end - shard.start)
        records = []
        for line in data.split(b"\n"):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    row = shard.first_row + len(records)
                    raise ValueError(f"{shard.file} record {row}: not valid JSON ({exc.msg})") from None
    ids, docs, rows = [], [], []
    for i, rec in enumerate(records):
        row = shard.first_row + i
        doc_id = rec.get("_id", rec.get("id")) if isinstance(rec, dict) else None
        if doc_id is None or not isinstance(rec.get("text"), str):
            raise ValueError(f"{shard.file} record {row}: needs an '_id' (or 'id') and a string 'text'")
        title = rec.get("title") or ""
        if not isinstance(title, str):
            raise ValueError(f"{shard.file} record {row}: 'title' must be a string, got {type(title).__name__}")
        ids.append(str(doc_id))
        docs.append({"title": title, "text": rec["text"]})
        rows.append(row)
    return ids, docs, rows


def _suffix(path: str) -> str:
    return os.path.splitext(path)[1].lower()
