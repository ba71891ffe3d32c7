"""Atomic file output and small readers shared by every layer."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO[Any]]:
    """Write to a temporary file beside ``path`` and rename it into place only on success."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def save_npy(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """``np.save`` atomically."""
    with atomic_write(path, "wb") as f:
        np.save(f, array)


def save_json(path: str | os.PathLike[str], obj: Any) -> None:
    """JSON (UTF-8, indented) atomically."""
    with atomic_write(path, "w") as f:
        json.dump(obj, f, ensure_ascii=False, indent=2)


def read_jsonl(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Yield one dict per non-empty line; a bad line raises ``ValueError`` with file and line number."""
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{lineno}: invalid JSON ({exc.msg})") from exc
            if not isinstance(obj, dict):
                raise ValueError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
            yield obj


def read_texts(path: str | os.PathLike[str], field: str = "text") -> list[Any]:
    """Texts from a ``.txt`` file (one per line) or ``.jsonl`` (``field``, or title+text dicts)."""
    p = Path(path)
    if p.suffix in (".jsonl", ".json"):
        out: list[Any] = []
        for i, obj in enumerate(read_jsonl(p)):
            if "title" in obj and field == "text":
                out.append({"title": obj.get("title") or "", "text": obj.get("text")})
            elif field in obj:
                out.append(obj[field])
            else:
                raise ValueError(f"{p}: record {i} has no {field!r} field")
        return out
    with open(p, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f if line.strip()]
