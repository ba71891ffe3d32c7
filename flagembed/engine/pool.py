"""Data parallelism over several devices with one worker process per device.

Built on ``concurrent.futures.ProcessPoolExecutor`` (spawn context) rather than hand-rolled queues:
a worker's exception comes back to the caller with its traceback, a worker that dies (segfault,
``os._exit``, OOM-killer) fails the call with ``BrokenProcessPool`` instead of hanging it, and every
wait has a timeout. FlagEmbedding's pool swallowed worker errors and could block forever (REFERENCE.md §10.3).
"""

from __future__ import annotations

import logging
import multiprocessing as mp
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

# Per-process state of a worker: the object its factory built for its device.
_WORKER: dict[str, Any] = {}


def _init_worker(factory: Callable[[str], Any], devices: Any) -> None:
    device = devices.get()  # each worker takes one device from the shared queue
    _WORKER["device"] = device
    _WORKER["obj"] = factory(device=device)


def _call(method: str | Callable[..., Any], chunk: Sequence[Any], kwargs: dict[str, Any]) -> Any:
    if callable(method):  # a picklable module-level function of (obj, chunk, **kwargs)
        return method(_WORKER["obj"], chunk, **kwargs)
    return getattr(_WORKER["obj"], method)(chunk, **kwargs)


class WorkerPoolError(RuntimeError):
    """A worker process died; the message says which call and how."""


class WorkerPool:
    """One process per device, each holding an object built by ``factory(device)``.

    Args:
        factory: picklable callable building the per-device object (e.g. ``functools.partial(Embedder, path)``
            called with ``device=``); it runs once in each worker.
        devices: device strings, one worker each.
        timeout: seconds to wait for one chunk before failing the call (``None``: no limit).
    """

    def __init__(self, factory: Callable[[str], Any], devices: Sequence[str], timeout: float | None = 3600) -> None:
        if not devices:
            raise ValueError("WorkerPool needs at least one device")
        self.devices = [str(d) for d in devices]
        self.timeout = timeout
        ctx = mp.get_context("spawn")
        queue = ctx.Queue()
        for d in self.devices:
            queue.put(d)
        self._executor = ProcessPoolExecutor(
            max_workers=len(self.devices), mp_context=ctx, initializer=_init_worker, initargs=(factory, queue)
        )

    def map(
        self, method: str | Callable[..., Any], items: Sequence[Any], chunk_size: int | None = None, **kwargs: Any
    ) -> list[Any]:
        """Call ``obj.method(chunk, **kwargs)`` on contiguous chunks across workers; results in input order.

        ``method`` is a method name, or a picklable module-level function called as ``method(obj, chunk, **kwargs)``.

        Raises:
            WorkerPoolError: a worker process died (its exit is reported, the pool is shut down).
            Exception: whatever a worker raised, re-raised here with the remote traceback attached.
        """
        if not items:
            return []
        size = chunk_size or -(-len(items) // len(self.devices))
        chunks = [items[i : i + size] for i in range(0, len(items), size)]
        futures = [self._executor.submit(_call, method, chunk, kwargs) for chunk in chunks]
        try:
            return [f.result(timeout=self.timeout) for f in futures]
        except BrokenProcessPool as exc:
            self.close()
            raise WorkerPoolError(f"a worker process died while running {method!r}: {exc}") from exc
        except BaseException:
            for f in futures:
                f.cancel()
            raise

    def close(self) -> None:
        """Stop the workers (waits for running chunks only when the pool is healthy)."""
        self._executor.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def concat_results(parts: list[Any]) -> Any:
    """Join per-chunk results: arrays are concatenated, lists extended."""
    if not parts:
        return []
    if isinstance(parts[0], np.ndarray):
        return np.concatenate(parts, axis=0)
    out: list[Any] = []
    for p in parts:
        out.extend(p)
    return out
