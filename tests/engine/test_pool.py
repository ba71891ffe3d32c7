import numpy as np
import pytest

from flagembed.engine.pool import WorkerPool, WorkerPoolError, concat_results


@pytest.fixture(scope="module")
def pool():
    from pool_workers import Echo

    with WorkerPool(Echo, ["cpu:a", "cpu:b"], timeout=120) as p:
        yield p


def test_results_in_order_across_workers(pool):
    parts = pool.map("square", list(range(10)), chunk_size=3)
    flat = concat_results(parts)
    assert [x for x, _, _ in flat] == [i * i for i in range(10)]
    assert {d for _, d, _ in flat} <= {"cpu:a", "cpu:b"}
    assert pool.map("square", []) == []


def test_worker_error_is_raised_in_caller(pool):
    with pytest.raises(ValueError, match="bad chunk starting at 0"):
        pool.map("fail", [0, 1, 2, 3])
    assert concat_results(pool.map("square", [2]))[0][0] == 4  # the pool still works


def test_crashed_worker_fails_the_call_instead_of_hanging():
    from pool_workers import Echo

    p = WorkerPool(Echo, ["cpu:a", "cpu:b"], timeout=120)
    with pytest.raises(WorkerPoolError, match="died"):
        p.map("crash", [1, 2, 3, 4])
    p.close()


def test_concat_arrays():
    out = concat_results([np.ones((2, 3)), np.zeros((1, 3))])
    assert out.shape == (3, 3)


def test_needs_devices():
    with pytest.raises(ValueError):
        WorkerPool(print, [])
