"""Model configuration records, config hashes and an on-disk embedding cache keyed by them.

The cache key covers everything that changes a vector: model name/path/revision, pooling, normalization,
instructions and their formats, max lengths, dtype, truncate_dim, which side (queries/corpus) and a hash of
the texts. A config change therefore never reuses stale vectors; a rerun with the same config is instant.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from flagembed._io import save_json, save_npy

logger = logging.getLogger(__name__)
T = TypeVar("T")

_SETTING_FIELDS = (
    "name",
    "path",
    "revision",
    "pooling",
    "normalize",
    "max_length",
    "query_instruction",
    "query_instruction_format",
    "passage_instruction",
    "passage_instruction_format",
    "truncate_dim",
)


def model_config(model: Any) -> dict[str, Any]:
    """What a model's vectors depend on, as a JSON-ready dict (recorded in every result).

    Works for flagembed embedders (``.settings``, ``.dtype``, ``*_max_length``) and, with less detail,
    for any object with ``encode``; such objects may define ``eval_config()`` to describe themselves.
    """
    if hasattr(model, "eval_config"):
        return dict(model.eval_config())
    out: dict[str, Any] = {"class": type(model).__name__}
    settings = getattr(model, "settings", None)
    if settings is not None and dataclasses.is_dataclass(settings):
        out.update({f: getattr(settings, f, None) for f in _SETTING_FIELDS})
        out["path"] = str(out["path"]) if out["path"] is not None else None
    else:
        out["name"] = getattr(model, "name", None) or getattr(model, "model_name", None) or type(model).__name__
    for attr in ("query_max_length", "passage_max_length"):
        if hasattr(model, attr):
            out[attr] = getattr(model, attr)
    if hasattr(model, "dtype"):
        out["dtype"] = str(model.dtype).replace("torch.", "")
    return out


def config_hash(config: Mapping[str, Any]) -> str:
    """Stable 16-hex-digit hash of a JSON-able config (key order does not matter)."""
    blob = json.dumps(config, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def texts_fingerprint(texts: Sequence[str]) -> str:
    """Hash of a list of texts (order matters)."""
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()[:16]


def cache_key(config: Mapping[str, Any]) -> str:
    """The cache key of ``config``: its hash, leaving out the model ``name`` when the resolved ``path`` is there
    (a local model typed as a relative or an absolute path, or a hub id and its snapshot, share entries)."""
    return config_hash({k: v for k, v in config.items() if not (k == "name" and config.get("path"))})


class EmbeddingCache:
    """Arrays on disk under ``directory/<key>.npy`` with a ``<key>.json`` record of the config they came from."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.hits = 0
        self.misses = 0

    def path(self, key: str) -> Path:
        """Where the array for ``key`` lives."""
        return self.directory / f"{key}.npy"

    def get_or_compute(self, config: Mapping[str, Any], compute: Callable[[], np.ndarray]) -> np.ndarray:
        """Return the cached array for ``config``, or compute, store (atomically) and return it."""
        key = cache_key(config)
        path = self.path(key)
        if path.is_file():
            self.hits += 1
            logger.info("embedding cache hit %s", path)
            return np.load(path)
        self.misses += 1
        array = np.asarray(compute())
        save_npy(path, array)
        save_json(path.with_suffix(".json"), {"key": key, "shape": list(array.shape), "config": dict(config)})
        return array

    def get_or_build(self, config: Mapping[str, Any], build: Callable[[], T], save: Callable[[T, Path], None],
                     load: Callable[[Path], T]) -> T:  # fmt: skip
        """Like :meth:`get_or_compute` for an object saved as a folder ``directory/<key>/`` (e.g. an index).

        ``save(obj, folder)`` must write the folder atomically (a half-written one is never read back).
        """
        key = cache_key(config)
        folder = self.directory / key
        if folder.is_dir():
            self.hits += 1
            logger.info("embedding cache hit %s", folder)
            return load(folder)
        self.misses += 1
        obj = build()
        save(obj, folder)
        save_json(self.directory / f"{key}.json", {"key": key, "folder": key, "config": dict(config)})
        return obj


def cached_encode(
    cache: EmbeddingCache | None, config: Mapping[str, Any], compute: Callable[[], np.ndarray]
) -> np.ndarray:
    """``compute()`` through ``cache`` when one is given."""
    return compute() if cache is None else cache.get_or_compute(config, compute)


def encode_texts(
    model: Any,
    texts: Sequence[str],
    *,
    cache: EmbeddingCache | None = None,
    show_progress: bool | None = None,
    **encode_kwargs: Any,
) -> np.ndarray:
    """Embed ``texts`` with ``model.encode`` (each distinct text once; through ``cache`` when given).

    ``encode_kwargs`` (e.g. ``normalize=False``) are passed on and are part of the cache key.
    """
    unique = list(dict.fromkeys(texts))
    kwargs = dict(encode_kwargs)
    if show_progress is not None:
        kwargs["show_progress"] = show_progress

    def compute() -> np.ndarray:
        out = model.encode(unique, **kwargs)
        if isinstance(out, dict):
            out = out["dense_vecs"]
        if hasattr(out, "detach"):
            out = out.detach().cpu().numpy()
        return np.asarray(out, dtype=np.float32)

    key = {**model_config(model), "side": "texts", "encode": encode_kwargs, "texts": texts_fingerprint(unique)}
    vectors = cached_encode(cache, key, compute)
    position = {t: i for i, t in enumerate(unique)}
    return vectors[[position[t] for t in texts]]
