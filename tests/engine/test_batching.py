import numpy as np
import pytest

from flagembed.engine.batching import pad_ids, plan_batches


def test_batches_are_a_length_sorted_permutation():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 50, size=103)
    batches = plan_batches(lengths, batch_size=8)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(103))
    assert np.all(np.diff(lengths[flat]) <= 0)  # longest first
    assert all(len(b) <= 8 for b in batches)


def test_token_budget_bounds_padded_tokens():
    rng = np.random.default_rng(1)
    lengths = rng.integers(1, 100, size=500)
    batches = plan_batches(lengths, batch_size=64, max_tokens=400)
    for b in batches:
        assert len(b) * lengths[b].max() <= 400 or len(b) == 1
    assert max(len(b) for b in batches) > 4  # short items share batches


def test_item_longer_than_budget_runs_alone():
    batches = plan_batches([500, 3, 3], batch_size=10, max_tokens=100)
    assert [len(b) for b in batches] == [1, 2]


def test_invalid_sizes():
    with pytest.raises(ValueError, match="batch_size"):
        plan_batches([1], batch_size=0)
    with pytest.raises(ValueError, match="max_tokens"):
        plan_batches([1], batch_size=1, max_tokens=0)


def test_pad_right_and_left():
    ids, mask = pad_ids([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    ids, mask = pad_ids([[5, 6, 7], [8]], pad_id=9, side="left", pad_to_multiple_of=4)
    assert ids.tolist() == [[9, 5, 6, 7], [9, 9, 9, 8]] and mask.tolist() == [[0, 1, 1, 1], [0, 0, 0, 1]]
