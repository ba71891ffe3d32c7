"""Dynamic batching: queue requests, coalesce those with the same key into one model call, bisect failures.

The batcher owns one worker thread (the model runs one call at a time anyway). Each coalesced call
goes to the model's own ``encode``/``compute_score``, which batches by token budget through the
shared engine (:func:`flagembed.engine.run_batches`). When a coalesced call raises, the group is
split in halves and retried until the failing requests are isolated: only they get the error.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

RunFn = Callable[[list[Any]], Sequence[Any]]


class QueueFullError(Exception):
    """The batcher already holds its maximum number of requests."""


class BatcherClosedError(Exception):
    """The batcher is shutting down and takes no new requests."""


@dataclass(frozen=True)
class BatchingConfig:
    """How requests are coalesced.

    Attributes:
        enabled: ``False`` runs every request alone (for comparison and debugging).
        max_batch_items: most inputs in one coalesced model call (a single larger request still runs whole).
        max_wait_ms: how long the worker waits for more requests before running a partial batch.
        max_pending: requests queued or running; :meth:`DynamicBatcher.submit` raises ``QueueFullError`` beyond.
    """

    enabled: bool = True
    max_batch_items: int = 256
    max_wait_ms: float = 2.0
    max_pending: int = 256

    def __post_init__(self) -> None:
        if self.max_batch_items < 1:
            raise ValueError(f"max_batch_items must be >= 1, got {self.max_batch_items}")
        if self.max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {self.max_wait_ms}")
        if self.max_pending < 1:
            raise ValueError(f"max_pending must be >= 1, got {self.max_pending}")


@dataclass
class _Job:
    key: Hashable
    items: list[Any]
    run: RunFn
    future: Future = field(default_factory=Future)


@dataclass
class BatchStats:
    """Counters since start: model calls, requests and items they carried, failures isolated."""

    batches: int = 0
    requests: int = 0
    items: int = 0
    failed_requests: int = 0
    busy_s: float = 0.0


class DynamicBatcher:
    """Coalesce queued requests with equal keys into single model calls on one worker thread.

    Example:
        >>> batcher = DynamicBatcher(BatchingConfig()).start()
        >>> vectors = await batcher.run(("dense", 512), texts, lambda xs: model.encode(xs))
    """

    def __init__(
        self,
        config: BatchingConfig | None = None,
        on_batch: Callable[[int, int, float], None] | None = None,
    ) -> None:
        self.config = config or BatchingConfig()
        self.on_batch = on_batch
        self.stats = BatchStats()
        self._pending: deque[_Job] = deque()
        self._running = 0
        self._cond = threading.Condition()
        self._closing = False
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> DynamicBatcher:
        """Start the worker thread (idempotent)."""
        with self._cond:
            if self._thread is None:
                self._closing = False
                self._thread = threading.Thread(target=self._work, name="flagembed-batcher", daemon=True)
                self._thread.start()
        return self

    def close(self, timeout: float | None = None) -> None:
        """Stop taking requests, finish those already queued, and join the worker."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                logger.warning("batcher did not drain within %.1f s", timeout or 0.0)
        with self._cond:
            self._thread = None
            leftover = list(self._pending)
            self._pending.clear()
        for job in leftover:
            job.future.set_exception(BatcherClosedError("server is shutting down"))

    @property
    def depth(self) -> int:
        """Requests queued or running."""
        with self._cond:
            return len(self._pending) + self._running

    # ------------------------------------------------------------------ submit
    def submit(self, key: Hashable, items: list[Any], run: RunFn) -> Future:
        """Queue one request's items; ``run`` maps a list of items (possibly many requests') to outputs.

        Raises:
            QueueFullError: ``max_pending`` requests are already queued or running.
            BatcherClosedError: the batcher is closing or was never started.
        """
        job = _Job(key, list(items), run)
        with self._cond:
            if self._closing or self._thread is None:
                raise BatcherClosedError("server is shutting down")
            if len(self._pending) + self._running >= self.config.max_pending:
                raise QueueFullError(
                    f"{self.config.max_pending} requests are already queued; the limit is max_concurrent_requests"
                )
            self._pending.append(job)
            self._cond.notify_all()
        return job.future

    async def run(self, key: Hashable, items: list[Any], run: RunFn) -> list[Any]:
        """``submit`` and await the outputs for ``items`` (in order)."""
        return await asyncio.wrap_future(self.submit(key, items, run))

    # ------------------------------------------------------------------ worker
    def _work(self) -> None:
        while True:
            group = self._next_group()
            if group is None:
                return
            try:
                live = [job for job in group if job.future.set_running_or_notify_cancel()]  # drop cancelled
                if live:
                    self._execute(live)
            finally:
                with self._cond:
                    self._running -= len(group)

    def _next_group(self) -> list[_Job] | None:
        cfg = self.config
        with self._cond:
            while not self._pending:
                if self._closing:
                    return None
                self._cond.wait()
            if cfg.enabled and cfg.max_wait_ms > 0 and not self._closing:
                deadline = time.monotonic() + cfg.max_wait_ms / 1000
                while self._queued_items(self._pending[0].key) < cfg.max_batch_items and not self._closing:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
            group = self._take(self._pending[0].key)
            self._running += len(group)
            return group

    def _queued_items(self, key: Hashable) -> int:
        return sum(len(j.items) for j in self._pending if j.key == key)

    def _take(self, key: Hashable) -> list[_Job]:
        """Pop FIFO jobs with ``key`` up to ``max_batch_items`` inputs (at least one job)."""
        group: list[_Job] = []
        rest: deque[_Job] = deque()
        items = 0
        limit = self.config.max_batch_items if self.config.enabled else 0
        while self._pending:
            job = self._pending.popleft()
            fits = not group or (job.key == key and items + len(job.items) <= limit)
            if fits:
                group.append(job)
                items += len(job.items)
            else:
                rest.append(job)
                if job.key == key:  # keep FIFO order among equal keys
                    break
        rest.extend(self._pending)
        self._pending = rest
        return group

    def _execute(self, group: list[_Job]) -> None:
        items = [x for job in group for x in job.items]
        start = time.perf_counter()
        try:
            outputs = group[0].run(items) if items else []
            if len(outputs) != len(items):
                raise ValueError(f"model returned {len(outputs)} outputs for {len(items)} inputs")
        except Exception as exc:  # noqa: BLE001 - delivered to the failing request(s), never hidden
            if len(group) == 1:
                self.stats.failed_requests += 1
                logger.info("request failed in the model: %s: %s", type(exc).__name__, exc)
                group[0].future.set_exception(exc)
                return
            logger.info("a batch of %d requests failed (%s); bisecting", len(group), type(exc).__name__)
            half = len(group) // 2
            self._execute(group[:half])
            self._execute(group[half:])
            return
        seconds = time.perf_counter() - start
        self.stats.batches += 1
        self.stats.requests += len(group)
        self.stats.items += len(items)
        self.stats.busy_s += seconds
        if self.on_batch is not None:
            self.on_batch(len(group), len(items), seconds)
        offset = 0
        for job in group:
            job.future.set_result(list(outputs[offset : offset + len(job.items)]))
            offset += len(job.items)
