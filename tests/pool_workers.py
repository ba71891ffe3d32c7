"""Picklable worker objects for tests/engine/test_pool.py (importable in spawned processes)."""

from __future__ import annotations

import os


class Echo:
    def __init__(self, device: str) -> None:
        self.device = device

    def square(self, chunk: list[int]) -> list[tuple[int, str, int]]:
        return [(x * x, self.device, os.getpid()) for x in chunk]

    def fail(self, chunk: list[int]) -> list[int]:
        raise ValueError(f"bad chunk starting at {chunk[0]}")

    def crash(self, chunk: list[int]) -> list[int]:
        os._exit(3)


def fail_chunk(obj: object, chunk: list, **kwargs: object) -> list:
    """A worker-side function (WorkerPool.map with a callable) that raises, naming the worker's device."""
    raise ValueError(f"bad chunk of {len(chunk)} on {obj.device}")


def crash_chunk(obj: object, chunk: list, **kwargs: object) -> list:
    """A worker-side function that kills its process, like a segfault or the OOM killer."""
    os._exit(3)
