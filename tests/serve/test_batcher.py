"""DynamicBatcher: coalescing, order, failure isolation by bisection, queue bound, drain on close."""

from __future__ import annotations

import threading
import time

import pytest

from flagembed.serve.batcher import BatcherClosedError, BatchingConfig, DynamicBatcher, QueueFullError


class Model:
    """Doubles numbers; raises on negatives; records every call's size."""

    def __init__(self, delay: float = 0.0) -> None:
        self.calls: list[list[int]] = []
        self.delay = delay
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, items: list[int]) -> list[int]:
        self.gate.wait(10)
        self.calls.append(list(items))
        if self.delay:
            time.sleep(self.delay)
        if any(x < 0 for x in items):
            raise ValueError(f"negative input in {items}")
        return [2 * x for x in items]


def test_queued_requests_coalesce_into_one_call_in_order():
    model = Model()
    model.gate.clear()  # hold the worker on the first call so the rest queue up
    b = DynamicBatcher(BatchingConfig(max_batch_items=100, max_wait_ms=0)).start()
    first = b.submit("k", [0], model)
    time.sleep(0.05)
    futures = [b.submit("k", [i, i + 100], model) for i in range(1, 21)]
    model.gate.set()
    assert first.result(5) == [0]
    assert [f.result(5) for f in futures] == [[2 * i, 2 * (i + 100)] for i in range(1, 21)]
    assert len(model.calls) == 2 and len(model.calls[1]) == 40
    assert b.stats.batches == 2 and b.stats.requests == 21 and b.stats.items == 41
    b.close()


def test_max_batch_items_and_keys_split_groups():
    model = Model()
    model.gate.clear()
    b = DynamicBatcher(BatchingConfig(max_batch_items=4, max_wait_ms=0)).start()
    b.submit("a", [0], model)
    time.sleep(0.05)
    futs = [b.submit("a" if i % 2 else "b", [i, i], model) for i in range(1, 9)]
    model.gate.set()
    assert [f.result(5) for f in futs] == [[2 * i, 2 * i] for i in range(1, 9)]
    assert all(len(c) <= 4 for c in model.calls)
    assert all(len({x % 2 for x in c}) == 1 for c in model.calls[1:])  # never mixes keys


def test_failing_request_is_isolated_by_bisection():
    model = Model()
    model.gate.clear()
    b = DynamicBatcher(BatchingConfig(max_batch_items=1000, max_wait_ms=0)).start()
    b.submit("k", [0], model)
    time.sleep(0.05)
    futs = [b.submit("k", [i, -i if i in (3, 11) else i], model) for i in range(1, 17)]
    model.gate.set()
    for i, f in enumerate(futs, 1):
        if i in (3, 11):
            with pytest.raises(ValueError, match="negative"):
                f.result(5)
        else:
            assert f.result(5) == [2 * i, 2 * i]
    assert b.stats.failed_requests == 2
    assert b.submit("k", [5], model).result(5) == [10]  # still serving
    b.close()


def test_wrong_output_count_fails_the_request():
    b = DynamicBatcher().start()
    with pytest.raises(ValueError, match="2 outputs for 1 inputs"):
        b.submit("k", [1], lambda xs: [1, 2]).result(5)
    b.close()


def test_disabled_runs_each_request_alone():
    model = Model()
    model.gate.clear()
    b = DynamicBatcher(BatchingConfig(enabled=False)).start()
    futs = [b.submit("k", [i], model) for i in range(6)]
    model.gate.set()
    assert [f.result(5) for f in futs] == [[2 * i] for i in range(6)]
    assert model.calls == [[i] for i in range(6)]
    b.close()


def test_queue_bound_and_close_drains():
    model = Model(delay=0.05)
    model.gate.clear()
    b = DynamicBatcher(BatchingConfig(max_pending=3, enabled=False)).start()
    futs = [b.submit("k", [i], model) for i in range(3)]
    with pytest.raises(QueueFullError, match="max_concurrent_requests"):
        b.submit("k", [9], model)
    assert b.depth == 3
    model.gate.set()
    b.close(timeout=10)  # waits for the three queued requests
    assert [f.result(0) for f in futs] == [[0], [2], [4]]
    with pytest.raises(BatcherClosedError):
        b.submit("k", [1], model)


def test_config_is_checked():
    with pytest.raises(ValueError, match="max_batch_items"):
        BatchingConfig(max_batch_items=0)
    with pytest.raises(ValueError, match="max_wait_ms"):
        BatchingConfig(max_wait_ms=-1)
