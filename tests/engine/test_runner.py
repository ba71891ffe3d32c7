import numpy as np
import pytest
import torch

from flagembed.engine import EngineConfig, OutOfMemoryOnItemError, run_batches


def _ids(n, seed=0):
    rng = np.random.default_rng(seed)
    return [list(rng.integers(1, 100, size=int(k))) for k in rng.integers(1, 20, size=n)]


def _row_sum_step(batch):
    return (batch.input_ids * batch.attention_mask).sum(dim=1, keepdim=True).float()


CPU = torch.device("cpu")


def test_order_restored_for_arrays_and_lists():
    ids = _ids(57)
    out = run_batches(ids, _row_sum_step, EngineConfig(CPU, batch_size=4))
    assert out.shape == (57, 1)
    assert out[:, 0].tolist() == [float(sum(x)) for x in ids]
    lists = run_batches(ids, lambda b: [len(ids[i]) for i in b.indices], EngineConfig(CPU, batch_size=5))
    assert lists == [len(x) for x in ids]


def test_empty_input():
    assert run_batches([], _row_sum_step, EngineConfig(CPU)) == []


def test_simulated_oom_splits_until_it_fits():
    ids = _ids(40, seed=1)
    sizes = []

    def step(batch):
        if len(batch) > 3:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        sizes.append(len(batch))
        return _row_sum_step(batch)

    out = run_batches(ids, step, EngineConfig(CPU, batch_size=16))
    assert out[:, 0].tolist() == [float(sum(x)) for x in ids]
    assert max(sizes) <= 3


def test_oom_on_single_item_names_the_index():
    ids = [[1, 2], [3] * 10, [4]]

    def step(batch):
        if batch.input_ids.shape[1] >= 10:
            raise torch.cuda.OutOfMemoryError("simulated")
        return _row_sum_step(batch)

    with pytest.raises(OutOfMemoryOnItemError, match="input 1 \\(10 tokens\\)"):
        run_batches(ids, step, EngineConfig(CPU, batch_size=8))


def test_unrelated_errors_are_not_swallowed():
    calls = []

    def step(batch):
        calls.append(len(batch))
        raise RuntimeError("a real bug")

    with pytest.raises(RuntimeError, match="a real bug"):
        run_batches(_ids(10), step, EngineConfig(CPU, batch_size=8))
    assert calls == [8]  # no retry with smaller batches


def test_token_budget_passed_to_planner():
    ids = _ids(60, seed=2)
    seen = []

    def step(batch):
        seen.append(batch.padded_tokens)
        return _row_sum_step(batch)

    run_batches(ids, step, EngineConfig(CPU, batch_size=64, max_tokens_per_batch=40))
    assert seen and all(t <= 40 for t in seen)
