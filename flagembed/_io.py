"""File output shared by every layer: atomic, with normal permissions, through links, recoverable.

- Files are written to a temporary sibling and renamed into place; they get the modes a plain
  ``open()`` would give (``0o666 & ~umask``, or the existing file's mode), not ``mkstemp``'s 0600.
- A symlink is written through (its target is replaced, the link stays); a special file such as
  ``/dev/stdout``, ``/dev/null`` or a FIFO is written directly; ``-`` means standard output.
- Folders are built in a temporary sibling and swapped in with :func:`staged_dir`; the swap leaves
  marker names so that a kill at any point is finished or rolled back by :func:`recover_dir`, which
  every later swap or open runs first, and which also sweeps temporary folders of dead processes.
- :func:`check_output_file` / :func:`check_output_dir` let commands refuse a bad destination before
  any model is loaded.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import stat
import sys
import tempfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

STDOUT = "-"
_umask_lock = threading.Lock()
# Our own temporary names: ".NAME.flagembed-{tmp,new,old}-HOST-PID-RANDOM". The host part keeps a process
# on one machine from sweeping the work in progress of a process on another (an index on a shared disk).
_HOST = re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:32] or "host"
_STAGE_RE = re.compile(
    r"^\.(?P<name>.+)\.flagembed-(?P<kind>tmp|new|old)-(?P<host>[A-Za-z0-9]+)-(?P<pid>\d+)-[0-9a-z_]+$"
)


class OutputPathError(ValueError):
    """A destination that cannot be written (the message is one line naming the path and why)."""


def _umask() -> int:
    with _umask_lock:  # os.umask can only be read by setting it
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def file_mode(existing: Path | None = None) -> int:
    """The mode a new file gets: the existing file's permission bits, else ``0o666 & ~umask``."""
    if existing is not None:
        with contextlib.suppress(OSError):
            return stat.S_IMODE(existing.stat().st_mode)
    return 0o666 & ~_umask()


def _is_special(path: Path) -> bool:
    """An existing non-regular, non-directory file (character device, FIFO, socket)."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    return not stat.S_ISREG(mode) and not stat.S_ISDIR(mode)


def _describe(exc: OSError) -> str:
    return (exc.strerror or str(exc)).lower()


def check_output_file(path: str | os.PathLike[str]) -> None:
    """Refuse a file destination that cannot be written, before any work is done.

    Raises:
        OutputPathError: ``path`` is a folder, its parent is a file, or the parent is not writable.
    """
    if os.fspath(path) == STDOUT:
        return
    target = Path(os.path.realpath(Path(path).expanduser()))
    if target.is_dir():
        raise OutputPathError(f"cannot write {path}: is a directory (give a file name)")
    if _is_special(target):
        return
    _check_parent_writable(Path(path), target.parent)


def check_output_dir(path: str | os.PathLike[str], *, overwrite: bool = True, what: str = "output") -> None:
    """Refuse a folder destination that cannot be written, before any work is done.

    Args:
        path: the folder to be (re)written.
        overwrite: whether a non-empty folder may be replaced.
        what: how to name the destination in the message (e.g. the CLI flag ``--out``).

    Raises:
        OutputPathError: ``path`` is a file, is non-empty while ``overwrite`` is False, or its parent
            cannot be written.
    """
    target = Path(path).expanduser()
    if target.exists() and not target.is_dir():
        raise OutputPathError(f"cannot write {path}: it is a file, and {what} must be a folder")
    if not overwrite and target.is_dir() and any(target.iterdir()):
        raise OutputPathError(f"cannot write {path}: the folder is not empty (pass --overwrite to replace it)")
    _check_parent_writable(Path(path), target.absolute().parent)


def _check_parent_writable(shown: Path, parent: Path) -> None:
    probe = parent
    while not probe.exists():  # the nearest existing ancestor decides; missing folders are created later
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise OutputPathError(f"cannot write {shown}: {probe} is not a directory")
    try:  # os.access ignores read-only mounts and root's privileges; a real probe file does not
        fd, tmp = tempfile.mkstemp(prefix=".flagembed-probe-", dir=probe)
    except OSError as exc:
        raise OutputPathError(f"cannot write {shown}: {_describe(exc)}") from None
    os.close(fd)
    os.unlink(tmp)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO[Any]]:
    """Write ``path`` whole or not at all.

    A temporary file beside the destination is renamed into place only on success. A symlink is
    written through to its target; special files (``/dev/stdout``, ``/dev/null``, FIFOs) and ``-``
    (standard output) are written directly, since they cannot be replaced.
    """
    encoding = {} if "b" in mode else {"encoding": "utf-8"}
    if os.fspath(path) == STDOUT:
        stream = sys.stdout.buffer if "b" in mode else sys.stdout
        yield stream
        stream.flush()
        return
    target = Path(os.path.realpath(Path(path).expanduser()))  # through links: the link itself stays
    if _is_special(target):
        with open(target, mode, **encoding) as f:
            yield f
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    recover_dir(target)  # sweeps temporary files that killed writers of this target left behind
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.flagembed-tmp-{_HOST}-{os.getpid()}-", dir=target.parent)
    try:
        os.fchmod(fd, file_mode(target if target.exists() else None))
        with os.fdopen(fd, mode, **encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def save_npy(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """``np.save`` atomically (``-`` writes the .npy bytes to standard output)."""
    with atomic_write(path, "wb") as f:
        np.save(f, array)


def save_json(path: str | os.PathLike[str], obj: Any) -> None:
    """JSON (UTF-8, indented) atomically."""
    with atomic_write(path, "w") as f:
        json.dump(obj, f, ensure_ascii=False, indent=2)


def _stage_name(target: Path, kind: str) -> Path:
    return target.parent / f".{target.name}.flagembed-{kind}-{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def recover_dir(target: str | os.PathLike[str]) -> None:
    """Finish or roll back a folder swap that a killed process left half done; sweep its leftovers.

    A swap renames the complete new folder to ``.NAME.flagembed-new-*``, the old one to
    ``.NAME.flagembed-old-*``, then the new one to ``NAME``. If ``NAME`` is missing, a complete new
    copy is moved in (else the old one is moved back). Temporary folders and copies of processes of
    this host that are no longer running are removed; those of live processes, and of other hosts
    (an index on a shared disk), are left alone.
    """
    target = Path(target).expanduser().absolute()
    parent = target.parent
    if not parent.is_dir():
        return
    stale: dict[str, list[Path]] = {"tmp": [], "new": [], "old": []}
    for entry in parent.iterdir():
        m = _STAGE_RE.match(entry.name)
        if m and m["name"] == target.name and m["host"] == _HOST and not _pid_alive(int(m["pid"])):
            stale[m["kind"]].append(entry)
    if not target.exists():
        for kind in ("new", "old"):  # prefer finishing the swap; else undo it
            if stale[kind]:
                newest = max(stale[kind], key=lambda p: p.stat().st_mtime)
                os.replace(newest, target)
                stale[kind].remove(newest)
                break
    for entries in stale.values():
        for entry in entries:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    entry.unlink()


@contextlib.contextmanager
def staged_dir(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Build a folder in a temporary sibling and swap it into ``target`` only on success.

    The temporary folder gets the umask's normal mode. An existing ``target`` is replaced (callers
    decide beforehand whether that is allowed). Kill-safe: see :func:`recover_dir`.
    """
    target = Path(target).expanduser().absolute()
    recover_dir(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _stage_name(target, "tmp")
    tmp.mkdir(mode=0o777)  # the umask applies, as for any folder the user creates
    try:
        yield tmp
        _swap(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _swap(tmp: Path, target: Path) -> None:
    if target.exists() and not target.is_dir():
        raise OutputPathError(f"cannot write {target}: it is a file, not a folder")
    new = _stage_name(target, "new")
    os.replace(tmp, new)  # from here on the new copy is known to be complete
    if not target.exists():
        os.replace(new, target)
        return
    old = _stage_name(target, "old")
    os.replace(target, old)  # a non-empty folder cannot be replaced in one rename
    try:
        os.replace(new, target)
    except BaseException:
        os.replace(old, target)
        shutil.rmtree(new, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)


def read_jsonl(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Yield one dict per non-empty line; a bad line raises ``ValueError`` with file and line number."""
    for _, obj in iter_jsonl(path):
        yield obj


def iter_jsonl(path: str | os.PathLike[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` per non-empty line of a JSONL file.

    Raises:
        ValueError: invalid JSON, a line that is not an object, or not UTF-8 (naming file and line).
    """
    for lineno, line in text_lines(path):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{lineno}: invalid JSON ({exc.msg})") from None
        if not isinstance(obj, dict):
            raise ValueError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
        yield lineno, obj


def text_lines(path: str | os.PathLike[str]) -> Iterator[tuple[int, str]]:
    """The lines of a UTF-8 file (a leading BOM dropped) with 1-based numbers, line ends stripped.

    Raises:
        ValueError: the path is a folder, or a line is not valid UTF-8 (naming the file and line).
    """
    p = Path(path)
    if p.is_dir():
        raise ValueError(f"cannot read {path}: is a directory (give a file)")
    with open(p, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise ValueError(
                    f"{path}:{lineno}: not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})"
                ) from None
            yield lineno, line.rstrip("\r\n")


def read_texts(path: str | os.PathLike[str], field: str = "text", *, keep_blank: bool = False) -> list[Any]:
    """Texts from a ``.txt`` file (one per line) or ``.jsonl`` (``field``, or title+text dicts).

    Blank ``.txt`` lines are dropped unless ``keep_blank`` (then row ``i`` of the output is line ``i``).
    """
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
    lines = [line for _, line in text_lines(p)]
    return lines if keep_blank else [line for line in lines if line.strip()]
