"""Guard the fine-tuning output folder: never train over another model or mix in another run's checkpoints.

A run writes ``flagembed_run.json`` (the model and training data it was started with) into ``output_dir``
before training. A non-empty folder is accepted only when it is empty, holds the marker of the same run
(same model and data), or when the caller resumes (``--resume``) or overwrites (``--overwrite_output_dir``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from flagembed._io import save_json

logger = logging.getLogger(__name__)

RUN_MARKER = "flagembed_run.json"


def run_key(model_name_or_path: str, train_data: list[str]) -> dict[str, Any]:
    """What identifies a run in its marker: the model and the training data it was started with."""
    return {"model_name_or_path": str(model_name_or_path), "train_data": [str(p) for p in train_data]}


def _read_marker(folder: Path) -> dict[str, Any] | None:
    path = folder / RUN_MARKER
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def check_output_dir(
    output_dir: str | os.PathLike[str],
    key: dict[str, Any],
    *,
    resume: bool,
    overwrite: bool,
    main_process: bool = True,
) -> None:
    """Refuse an output folder that holds something other than this run.

    With ``overwrite``, the folder's old ``checkpoint-*`` folders are removed (by the main process, unless resuming).

    Raises:
        ValueError: ``output_dir`` is a file; or it is a non-empty folder of another model or run and
            neither ``resume`` nor ``overwrite`` is set; or ``resume`` points at another run's checkpoints.
    """
    folder = Path(output_dir)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"output_dir {folder} exists and is not a folder")
    if not folder.is_dir() or not any(folder.iterdir()):
        return
    if overwrite:
        for old in [] if resume or not main_process else sorted(folder.glob("checkpoint-*")):
            if old.is_dir():  # another run's checkpoints would be picked up by a later --resume latest
                logger.warning("overwrite_output_dir: removing the old checkpoint %s", old)
                shutil.rmtree(old)
        return
    marker = _read_marker(folder)
    if marker is not None and marker.get("model_name_or_path") == key["model_name_or_path"]:
        if marker.get("train_data") == key["train_data"] or resume:
            return  # this run (or its continuation on more data) wrote the folder
    if marker is not None and resume:
        raise ValueError(
            f"output_dir {folder} holds a run of {marker.get('model_name_or_path')!r}, not "
            f"{key['model_name_or_path']!r}: resuming would load its checkpoints; choose another folder "
            "or pass --overwrite_output_dir"
        )
    if resume:
        return  # no marker (an HF or older run): the caller asked for its checkpoints
    what = "another run" if marker is not None else "files of another model or run"
    raise ValueError(
        f"output_dir {folder} is not empty ({what}); choose a new folder, pass --resume latest to continue "
        "a run there, or --overwrite_output_dir to train over it"
    )


def write_run_marker(output_dir: str | os.PathLike[str], key: dict[str, Any]) -> None:
    """Record this run in ``output_dir`` (creates the folder)."""
    folder = Path(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    save_json(folder / RUN_MARKER, key)
