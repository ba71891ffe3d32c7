"""On-disk layout of an index directory: files + ``manifest.json`` with checksums, written atomically.

A directory is written into a temporary sibling and swapped into place (``_io.staged_dir``), so a
failed or killed save never damages an existing index. ``manifest.json`` records the index type,
its parameters, the model settings that produced the vectors with their hash, and a SHA-256 per
file; loading verifies all.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from flagembed._io import recover_dir, staged_dir

FORMAT = "flagembed-index"
VERSION = 1
MANIFEST = "manifest.json"


class IndexFormatError(ValueError):
    """An index directory is missing, corrupted, or of another type or version."""


class IndexMismatchError(ValueError):
    """An index was built with a different model configuration than the one asked for."""


def config_hash(model: Mapping[str, Any] | None) -> str | None:
    """Stable SHA-256 of a model configuration (canonical JSON); ``None`` when there is none."""
    if model is None:
        return None
    blob = json.dumps(dict(model), sort_keys=True, ensure_ascii=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_index_dir(
    directory: str | os.PathLike[str],
    kind: str,
    params: Mapping[str, Any],
    write_files: Callable[[Path], None],
    model: Mapping[str, Any] | None = None,
) -> None:
    """Write an index directory atomically.

    ``write_files(tmp)`` writes the payload files into ``tmp``; this function adds the manifest
    and swaps the directory into place. An existing non-index, non-empty directory is refused.

    Raises:
        IndexFormatError: ``directory`` exists, is not empty and holds no flagembed index.
    """
    target = Path(directory).expanduser().absolute()
    if target.exists():
        if not target.is_dir():
            raise IndexFormatError(f"{target} exists and is not a directory")
        if any(target.iterdir()) and not (target / MANIFEST).is_file():
            raise IndexFormatError(f"{target} is a non-empty directory without {MANIFEST}; refusing to overwrite it")
    with staged_dir(target) as tmp:
        write_files(tmp)
        files = {p.name: _sha256(p) for p in sorted(tmp.iterdir()) if p.is_file()}
        subdirs = sorted(p.name for p in tmp.iterdir() if p.is_dir())
        manifest = {
            "format": FORMAT,
            "version": VERSION,
            "type": kind,
            "params": dict(params),
            "model": dict(model) if model is not None else None,
            "config_hash": config_hash(model),
            "files": files,
            "subdirs": subdirs,
        }
        with open(tmp / MANIFEST, "w", encoding="utf-8") as f:
            json.dump(manifest, f, ensure_ascii=False, indent=2, default=str)
            f.flush()
            os.fsync(f.fileno())


def read_manifest(
    directory: str | os.PathLike[str],
    kind: str,
    model: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Read and verify an index directory's manifest and file checksums.

    Args:
        directory: the index directory.
        kind: the index type expected (``dense``, ``sparse``, ``multivector``, ``hybrid``).
        model: if given, the model configuration the caller will query with; it must hash equal.

    Raises:
        IndexFormatError: missing directory/manifest, wrong type or version, missing or altered files.
        IndexMismatchError: ``model`` differs from the configuration recorded at build time.
    """
    path = Path(directory).expanduser()
    recover_dir(path)  # a save killed mid-swap is finished or rolled back first
    mfile = path / MANIFEST
    if not mfile.is_file():
        raise IndexFormatError(f"{path} is not a flagembed index directory (no {MANIFEST})")
    try:
        with open(mfile, encoding="utf-8") as f:
            manifest = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise IndexFormatError(f"{mfile} is corrupted: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise IndexFormatError(f"{mfile} is not a flagembed index manifest")
    if manifest.get("version") != VERSION:
        found = manifest.get("version")
        raise IndexFormatError(f"{path}: index format version {found!r}; this flagembed reads {VERSION}")
    if manifest.get("type") != kind:
        raise IndexFormatError(f"{path} holds a {manifest.get('type')!r} index, not a {kind!r} index")
    for name, digest in (manifest.get("files") or {}).items():
        fp = path / name
        if not fp.is_file():
            raise IndexFormatError(f"{path} is incomplete: {name} is missing")
        if _sha256(fp) != digest:
            raise IndexFormatError(f"{path} is corrupted: {name} does not match its checksum in {MANIFEST}")
    if model is not None:
        check_model(manifest, model, path)
    return manifest


def check_model(manifest: Mapping[str, Any], model: Mapping[str, Any], where: Path | str) -> None:
    """Refuse a model configuration that differs from the recorded one, naming the differing keys.

    Raises:
        IndexMismatchError: the hashes differ.
    """
    if manifest.get("config_hash") == config_hash(model):
        return
    recorded = manifest.get("model") or {}
    diff = sorted(k for k in set(recorded) | set(model) if recorded.get(k) != model.get(k))
    shown = ", ".join(f"{k}: index={recorded.get(k)!r} vs now={model.get(k)!r}" for k in diff[:6])
    raise IndexMismatchError(
        f"index at {where} was built with a different model configuration ({shown or 'unrecorded'}); "
        "rebuild the index or load it with the model it was built with"
    )


@contextlib.contextmanager
def open_binary(path: Path) -> Any:
    """Open a payload file, mapping a missing file to :class:`IndexFormatError`."""
    try:
        f = open(path, "rb")
    except FileNotFoundError as exc:
        raise IndexFormatError(f"{path.parent} is incomplete: {path.name} is missing") from exc
    with f:
        yield f


def read_json(path: Path) -> Any:
    """A JSON payload file (checksummed by the manifest already)."""
    with open_binary(path) as f:
        return json.loads(f.read().decode("utf-8"))


def write_json(path: Path, obj: Any) -> None:
    """A JSON payload file (inside the temporary directory, so no extra atomicity is needed)."""
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False)
