"""Assemble a merged model folder beside its destination and move it into place only when complete."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from flagembed._io import staged_dir
from flagembed.merge.checkpoint import HEAD_FILES

logger = logging.getLogger(__name__)

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".h5", ".msgpack", ".onnx", ".ckpt", ".gguf")
_WEIGHT_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json", "tf_model.h5.index.json")
# Exported copies of the base weights (not merged, so they would be stale): left out.
_STALE_DIRS = ("onnx", "openvino", "coreml")
# Training artefacts of a fine-tuning run (HF Trainer, DeepSpeed, flagembed): not part of the model.
_TRAINING_FILES = (
    "trainer_state.json",
    "training_args.bin",
    "optimizer.pt",
    "scheduler.pt",
    "scaler.pt",
    "all_results.json",
    "train_results.json",
    "eval_results.json",
    "loss_history.json",
    "loss.png",
    "flagembed_run.json",
    "zero_to_fp32.py",
    "latest",
)
_TRAINING_PATTERNS = ("rng_state*", "events.out.tfevents*", "checkpoint-*", "global_step*")


def check_output(output_path: str | os.PathLike[str], overwrite: bool) -> Path:
    """Validate the destination before any work: refuse a non-empty folder unless ``overwrite``.

    Raises:
        ValueError: the path is a file, or a non-empty folder and ``overwrite`` is False.
    """
    out = Path(output_path).expanduser().resolve()
    if out.is_file():
        raise ValueError(f"output_path {str(out)!r} is a file; give a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ValueError(f"output_path {str(out)!r} exists and is not empty; pass overwrite=True to replace it")
    return out


@contextlib.contextmanager
def staging_folder(output: Path, overwrite: bool) -> Iterator[Path]:
    """A temporary folder beside ``output`` that replaces it on success and disappears on failure."""
    with staged_dir(output) as tmp:
        yield tmp
        check_output(output, overwrite)  # re-check: something may have appeared meanwhile


def copy_support_files(source: Path, dest: Path) -> None:
    """Copy the model's own config, tokenizer and sentence-transformers files of ``source``; weights are merged.

    Left out: weights (written merged), exported copies (``onnx/``, ...), and training artefacts
    (``checkpoint-*`` folders with optimizer state, ``trainer_state.json``, ``training_args.bin``, logs).
    Sub-folders are copied only when they are sentence-transformers modules (named in ``modules.json``
    or ``N_Name``); weight files inside them (e.g. ``2_Dense``) are not merged: copied with a warning.
    """
    modules = _module_dirs(source)
    for item in sorted(source.iterdir()):
        name = item.name
        if name.startswith(".") or name in _WEIGHT_INDEXES or name in HEAD_FILES or _is_training_artefact(name):
            continue
        if item.is_dir():
            if name not in modules:
                logger.info("not copying %s/ (not a model module: %s)", name, _why_skipped(name))
                continue
            for sub in item.rglob("*"):
                if sub.is_file() and sub.suffix in _WEIGHT_SUFFIXES:
                    logger.warning("%s holds weights that are not merged; copied from %s", sub, source)
            shutil.copytree(item, dest / name, ignore=shutil.ignore_patterns(".*"))
        elif item.suffix not in _WEIGHT_SUFFIXES:
            shutil.copy2(item, dest / name)


def _is_training_artefact(name: str) -> bool:
    import fnmatch

    return name in _TRAINING_FILES or any(fnmatch.fnmatch(name, p) for p in _TRAINING_PATTERNS)


def _module_dirs(source: Path) -> set[str]:
    """Sub-folders that belong to the model: sentence-transformers modules (``modules.json`` paths, ``N_Name``)."""
    import re

    found = {p.name for p in source.iterdir() if p.is_dir() and re.fullmatch(r"\d+_\w+", p.name)}
    modules_file = source / "modules.json"
    if modules_file.is_file():
        with open(modules_file, encoding="utf-8") as f:
            for module in json.load(f):
                path = str(module.get("path", "")).strip("/")
                if path:
                    found.add(path.split("/")[0])
    return {name for name in found if name not in _STALE_DIRS}


def _why_skipped(name: str) -> str:
    return "exported base weights, not merged" if name in _STALE_DIRS else "not a sentence-transformers module"


def write_st_config(dest: Path, hidden_size: int, pooling: str, normalize: bool, max_length: int) -> None:
    """Write a sentence-transformers layout (Transformer, Pooling, optional Normalize) into ``dest``."""
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
        (dest / "2_Normalize").mkdir(exist_ok=True)
    (dest / "1_Pooling").mkdir(exist_ok=True)
    pool_cfg = {
        "word_embedding_dimension": hidden_size,
        "pooling_mode_cls_token": pooling == "cls",
        "pooling_mode_mean_tokens": pooling == "mean",
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
        "pooling_mode_weightedmean_tokens": False,
        "pooling_mode_lasttoken": pooling == "last_token",
        "include_prompt": True,
    }
    _dump(dest / "modules.json", modules)
    _dump(dest / "1_Pooling" / "config.json", pool_cfg)
    _dump(dest / "sentence_bert_config.json", {"max_seq_length": max_length, "do_lower_case": False})


def _dump(path: Path, obj: object) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2)
