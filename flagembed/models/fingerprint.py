"""A content fingerprint of a checkpoint folder's weights: equal for equal files wherever they lie.

Names, sizes and sampled content of ``config.json`` and every weight file (the whole file when it is
small; else its first and last MiB and 14 evenly spaced 64 KiB blocks), so a copy, a re-download or
a re-install matches while another fine-tune or revision does not. Reading ~2 MiB per file keeps it
fast for multi-GB checkpoints; a change confined to unsampled bytes of an otherwise equal file is the
one thing it cannot see.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
_WHOLE = 4 << 20
_EDGE = 1 << 20
_BLOCK = 64 << 10
_BLOCKS = 14


def _sample(path: Path, size: int, h: Any) -> None:
    with open(path, "rb") as f:
        if size <= _WHOLE:
            h.update(f.read())
            return
        offsets = [0, size - _EDGE] + [(size * (i + 1)) // (_BLOCKS + 1) for i in range(_BLOCKS)]
        for off in offsets:
            f.seek(off)
            h.update(f.read(_EDGE if off in (0, size - _EDGE) else _BLOCK))


def weights_fingerprint(folder: str | os.PathLike[str]) -> str:
    """SHA-256 over ``config.json`` and the weight files of ``folder`` (see the module docstring).

    Raises:
        FileNotFoundError: the folder holds no weight file.
    """
    root = Path(folder)
    files = sorted(
        p for p in root.iterdir() if p.is_file() and (p.name == "config.json" or p.suffix in WEIGHT_SUFFIXES)
    )
    if not any(p.suffix in WEIGHT_SUFFIXES for p in files):
        raise FileNotFoundError(f"no weight files ({', '.join(WEIGHT_SUFFIXES)}) in {root}")
    h = hashlib.sha256()
    for p in files:
        size = p.stat().st_size  # follows Hugging Face cache symlinks to the blobs
        h.update(f"{p.name}\t{size}\n".encode())
        _sample(p, size, h)
    return h.hexdigest()
