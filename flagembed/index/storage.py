"""On-disk layout of an index directory: files + ``manifest.json`` with checksums, written atomically.

A directory is written into a temporary sibling and swapped into place (``_io.staged_dir``), so a
failed or killed save never damages an existing index. ``manifest.json`` records the index type,
its parameters, the model settings that produced the vectors with their hash, and a SHA-256 per file
(a nested index directory is listed by its own ``manifest.json``). Loading verifies every listed file
plus the fixed set of files the index type needs, and refuses paths that lead outside the index directory.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from flagembed._io import check_output_dir, recover_dir, staged_dir

FORMAT = "flagembed-index"
VERSION = 2  # 2: model identity = weights fingerprint + settings; hybrid indexes store documents
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
    target = check_index_target(directory)
    with staged_dir(target) as tmp:
        write_files(tmp)
        files = {p.name: _sha256(p) for p in sorted(tmp.iterdir()) if p.is_file()}
        subdirs = sorted(p.name for p in tmp.iterdir() if p.is_dir())
        for sub in subdirs:  # a nested index is covered by its own manifest, which lists its files
            if (tmp / sub / MANIFEST).is_file():
                files[f"{sub}/{MANIFEST}"] = _sha256(tmp / sub / MANIFEST)
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


def check_index_target(directory: str | os.PathLike[str]) -> Path:
    """Refuse a destination an index cannot be saved to (before any encoding); returns its absolute path.

    Raises:
        IndexFormatError: a file, or a non-empty folder that holds no flagembed index.
        OutputPathError: the parent folder cannot be written.
    """
    target = Path(directory).expanduser().absolute()
    if target.exists():
        if not target.is_dir():
            raise IndexFormatError(f"{target} exists and is not a directory")
        if any(target.iterdir()) and not (target / MANIFEST).is_file():
            raise IndexFormatError(f"{target} is a non-empty directory without {MANIFEST}; refusing to overwrite it")
    check_output_dir(target)
    return target


def member(directory: Path, name: Any) -> Path:
    """The path of payload file ``name`` inside an index directory.

    Raises:
        IndexFormatError: ``name`` is not a relative path inside ``directory`` (absolute, ``..``, a
            backslash, or a symlink that leads outside).
    """
    pure = PurePosixPath(name) if isinstance(name, str) else None
    if pure is None or not name or "\\" in name or pure.is_absolute() or ".." in pure.parts or ":" in name:
        raise IndexFormatError(f"{directory}/{MANIFEST} lists {name!r}, which is not a file inside the index")
    path = directory / pure
    if not path.resolve().is_relative_to(directory.resolve()):
        raise IndexFormatError(f"{directory}: {name} is a link that leads outside the index directory")
    return path


def read_manifest(
    directory: str | os.PathLike[str],
    kind: str,
    model: Mapping[str, Any] | None = None,
    required: Iterable[str] | Callable[[Mapping[str, Any]], Iterable[str]] = (),
) -> dict[str, Any]:
    """Read and verify an index directory's manifest and file checksums.

    Args:
        directory: the index directory.
        kind: the index type expected (``dense``, ``sparse``, ``multivector``, ``hybrid``).
        model: if given, the model configuration the caller will query with; it must hash equal.
        required: the payload files this index type needs (or a function of the manifest's params
            returning them): each must be listed in the manifest, present and match its checksum.

    Raises:
        IndexFormatError: missing directory/manifest, wrong type or version, missing, unlisted or
            altered files, or a listed path outside the directory.
        IndexMismatchError: ``model`` differs from the configuration recorded at build time.
    """
    path = Path(directory).expanduser()
    recover_dir(path)  # a save killed mid-swap is finished or rolled back first
    mfile = path / MANIFEST
    if not mfile.is_file():
        raise IndexFormatError(f"{path} is not a flagembed index directory (no {MANIFEST})")
    member(path, MANIFEST)
    try:
        with open(mfile, encoding="utf-8") as f:
            manifest = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise IndexFormatError(f"{mfile} is corrupted: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise IndexFormatError(f"{mfile} is not a flagembed index manifest")
    if manifest.get("version") != VERSION:
        found = manifest.get("version")
        raise IndexFormatError(f"{path}: index format version {found!r}; this flagembed reads {VERSION} (rebuild it)")
    if manifest.get("type") != kind:
        raise IndexFormatError(f"{path} holds a {manifest.get('type')!r} index, not a {kind!r} index")
    files, params = manifest.get("files"), manifest.get("params")
    if not isinstance(files, dict) or not all(isinstance(d, str) for d in files.values()):
        raise IndexFormatError(f"{mfile} is corrupted: 'files' must map file names to SHA-256 digests")
    if not isinstance(params, dict):
        raise IndexFormatError(f"{mfile} is corrupted: 'params' must be an object")
    if manifest.get("model") is not None and not isinstance(manifest["model"], dict):
        raise IndexFormatError(f"{mfile} is corrupted: 'model' must be an object")
    try:
        needed = sorted(set(required(params) if callable(required) else required))
    except (KeyError, TypeError, ValueError) as exc:
        raise IndexFormatError(f"{mfile} has invalid params: {exc}") from exc
    for name in needed:
        if name not in files:
            raise IndexFormatError(f"{path} is incomplete: {MANIFEST} does not list {name}")
    for name, digest in files.items():
        fp = member(path, name)
        if not fp.is_file():
            raise IndexFormatError(f"{path} is incomplete: {name} is missing")
        if _sha256(fp) != digest:
            raise IndexFormatError(f"{path} is corrupted: {name} does not match its checksum in {MANIFEST}")
    if model is not None:
        check_model(manifest, model, path)
    return manifest


def param(manifest: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: Path) -> Any:
    """A required manifest parameter of the given type.

    Raises:
        IndexFormatError: the parameter is missing or of another type.
    """
    value = manifest["params"].get(key)
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        raise IndexFormatError(f"{where}/{MANIFEST}: params.{key} = {value!r:.80} is missing or invalid")
    return value


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
    """A JSON payload file (checksummed by the manifest already).

    Raises:
        IndexFormatError: the file is missing or not valid JSON.
    """
    with open_binary(path) as f:
        try:
            return json.loads(f.read().decode("utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise IndexFormatError(f"{path.parent} is corrupted: {path.name} is not valid JSON ({exc})") from exc


@contextlib.contextmanager
def reading(path: Path, *errors: type[BaseException]) -> Any:
    """Turn the given exceptions raised while parsing payload file ``path`` into :class:`IndexFormatError`."""
    try:
        yield
    except errors as exc:
        raise IndexFormatError(f"{path.parent} is corrupted: cannot read {path.name} ({exc})") from exc


def write_json(path: Path, obj: Any) -> None:
    """A JSON payload file (inside the temporary directory, so no extra atomicity is needed)."""
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False)
