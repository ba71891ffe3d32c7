"""Several devices for M3 and the rerankers: one worker process per device, through the engine's WorkerPool.

Each worker rebuilds the same model (same class, same arguments, the resolved local folder) on its device; a
call splits its inputs into contiguous chunks, one per worker, and joins the results in input order. Worker
errors re-raise in the caller; a worker that dies fails the call with ``WorkerPoolError`` (no hang).
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from flagembed.engine.pool import WorkerPool, WorkerPoolError


def remember_init(init: Callable[..., None]) -> Callable[..., None]:
    """Decorate ``__init__`` to keep the outermost decorated call's class and arguments for the workers.

    A subclass whose own ``__init__`` is decorated records its own arguments; an undecorated wrapper class
    (the FlagEmbedding-compatible names) records the base class and the arguments it translated to.
    """

    @functools.wraps(init)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> None:
        if "_init_call" not in self.__dict__:  # the first decorated __init__ to run holds every argument
            cls = next(c for c in type(self).__mro__ if c.__dict__.get("__init__") is wrapper)
            self._init_call = (cls, args, dict(kwargs))
        init(self, *args, **kwargs)

    return wrapper


class DevicePool:
    """A lazily started :class:`WorkerPool` that rebuilds ``owner`` on each of its devices.

    Args:
        owner: the model object (its ``__init__`` decorated with :func:`remember_init`).
        devices: the devices, one worker each; with one device the pool never starts.
        path: the resolved local folder, used instead of the name the owner was given (no second hub lookup).
        overrides: constructor arguments that replace the recorded ones in the workers.
    """

    def __init__(self, owner: Any, devices: Sequence[Any], path: Any, **overrides: Any) -> None:
        cls, args, kwargs = owner.__dict__.get("_init_call", (type(owner), (path,), {}))
        kwargs = {**kwargs, **overrides, "show_progress": False}
        kwargs.pop("device", None)
        self.devices = [str(d) for d in devices]
        self.factory = functools.partial(cls, str(path), *args[1:], **kwargs)
        self._pool: WorkerPool | None = None

    def wants(self, n: int) -> bool:
        """Whether ``n`` inputs are split across devices (several devices and more than one input)."""
        return len(self.devices) > 1 and n > 1

    def map(self, method: str | Callable[..., Any], items: Sequence[Any], **kwargs: Any) -> list[Any]:
        """Per-chunk results of ``method`` across the workers, in input order (the pool starts on first use)."""
        if self._pool is None:
            self._pool = WorkerPool(self.factory, self.devices)
            weakref.finalize(self, self._pool.close)
        try:
            return self._pool.map(method, items, **kwargs)
        except WorkerPoolError:
            self._pool = None  # a worker died and the pool shut down: the next call starts fresh workers
            raise

    def close(self) -> None:
        """Stop the workers, if started."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None


def scores_chunk(obj: Any, pairs: list[Any], **kwargs: Any) -> tuple[Any, int]:
    """Worker side of a reranker's parallel ``compute_score``: its scores plus the truncation count."""
    return obj.compute_score(pairs, **kwargs), int(getattr(obj, "last_truncated", 0))


def join_scores(parts: list[Any]) -> Any:
    """Chunk scores joined: flat lists extended; per-layer lists (layerwise) joined layer by layer."""
    if parts and parts[0] and isinstance(parts[0][0], list):
        return [sum((p[i] for p in parts), []) for i in range(len(parts[0]))]
    return sum(parts, [])


def m3_chunk(obj: Any, texts: list[str], **kwargs: Any) -> tuple[Any, int]:
    """Worker side of ``M3Embedder.encode_multi`` over several devices: the chunk's M3Output and truncations."""
    return obj.encode_multi(texts, **kwargs), int(obj.last_truncated)


def join_m3(parts: list[Any]) -> Any:
    """Chunk M3Outputs joined in order (dense stacked, sparse rows stacked, ColBERT lists extended)."""
    first = parts[0]
    if first.dense is not None:
        first.dense = np.concatenate([p.dense for p in parts], axis=0)
    if first.sparse is not None:
        first.sparse = sp.vstack([p.sparse for p in parts], format="csr")
    if first.colbert is not None:
        first.colbert = [c for p in parts for c in p.colbert]
    return first
