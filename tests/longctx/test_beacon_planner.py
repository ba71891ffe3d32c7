"""Planner golden tests (LONG_CONTEXT.md §3.7 and §12 A): no model, pure Python."""

from __future__ import annotations

import random

import pytest

from flagembed.longctx.beacon.planner import BeaconSettings, Planner, adapt_ratio, capacity, memory_formula

B = -1


def _ids(plan):
    return ["B" if a < 0 else a for a in plan.src]


def test_traced_table_interleave():
    p = Planner(BeaconSettings(window=8, stride=8, ratio=(4,)))
    p.extend(20)
    rows = []
    while not p.done:
        plan = p.next_step()
        rows.append((_ids(plan), plan.mem_before, plan.positions, (len(plan.src), plan.mem + len(plan.src)), p.sizes()))
    assert rows[0] == ([0, 1, 2, 3, "B", 4, 5, 6, 7, "B"], (0, 0, 0), list(range(10)), (10, 10), (0, 2, 0))
    assert rows[1] == ([8, 9, 10, 11, "B", 12, 13, 14, 15, "B"], (0, 2, 0), list(range(2, 12)), (10, 12), (0, 4, 0))
    assert rows[2] == ([16, 17, 18, 19, "B"], (0, 4, 0), [4, 5, 6, 7, 8], (5, 9), (0, 4, 5))
    decode = []
    for _ in range(5):
        p.extend(1)
        plan = p.next_step()
        decode.append((_ids(plan), plan.mem_before, plan.positions, plan.mem + len(plan.src), p.sizes(), plan.raw_rows))
    assert decode[0] == ([20], (0, 4, 5), [9], 10, (0, 4, 6), [0])
    assert decode[1] == ([21], (0, 4, 6), [10], 11, (0, 4, 7), [0])
    assert decode[2] == ([22], (0, 4, 7), [11], 12, (0, 4, 8), [0])
    assert decode[3] == ([23, "B"], (0, 4, 8), [12, 13], 14, (0, 6, 0), [0])  # the window completes: the cliff
    assert decode[4] == ([24], (0, 6, 0), [6], 7, (0, 6, 1), [0])


def test_training_trace_labels_and_last_window():
    p = Planner(BeaconSettings(window=8, stride=8, ratio=(4,)), training=True)
    p.extend(20)
    plans = [p.next_step() for _ in range(3)]
    assert p.done
    assert [_ids(x) for x in plans][2] == [16, 17, 18, 19]  # the last training window carries no beacons
    assert all(x.loss for x in plans)  # interleave + full-coverage keeps first-window labels
    labels = list(range(1, 20)) + [-100]  # pre-shifted
    win1 = [labels[a] if a >= 0 else -100 for a in plans[0].src]
    assert win1 == [1, 2, 3, 4, -100, 5, 6, 7, 8, -100]
    assert [labels[a] for a in plans[2].src] == [17, 18, 19, -100]
    q = Planner(BeaconSettings(window=8, stride=8, ratio=(4,), pos="append"), training=True)
    q.extend(20)
    assert [q.next_step().loss for _ in range(3)] == [False, True, True]  # append: first window labels masked


def test_append_step_expansion_positions_and_mask():
    p = Planner(BeaconSettings(window=8, stride=8, ratio=(4,), pos="append", attn="step-expansion"))
    p.extend(20)
    w1 = p.next_step()
    assert _ids(w1) == [0, 1, 2, 3, 4, 5, 6, 7, "B", "B"]
    assert w1.positions == [0, 1, 2, 3, 4, 5, 6, 7, 4, 9]
    assert w1.beacon_visible == {8: [(0, 4), (8, 9)], 9: [(0, 8), (8, 10)]}
    w2 = p.next_step()
    assert w2.positions[-2:] == [6, 11] and w2.mem_before == (0, 2, 0)
    w3 = p.next_step()
    assert _ids(w3) == [16, 17, 18, 19] and p.sizes() == (0, 4, 4)  # partial window: no beacons
    for _ in range(3):
        p.extend(1)
        assert p.next_step().beacon_count == 0
    p.extend(1)
    last = p.next_step()
    assert _ids(last) == [23, "B", "B"] and last.positions == [11, 8, 13] and p.sizes() == (0, 6, 0)


def test_sink_one():
    p = Planner(BeaconSettings(window=8, stride=8, ratio=(4,), sink_size=1))
    p.extend(20)
    w1 = p.next_step()
    assert w1.sink_rows == [0] and p.sizes() == (1, 2, 0)
    w2 = p.next_step()
    assert w2.mem == 3 and w2.positions == list(range(3, 13))


def test_adapt_rule_and_capacities():
    assert [capacity(r, 32768, 2048) for r in (2, 4, 8)] == [63488, 124928, 247808]
    assert adapt_ratio([2, 4, 8], 100_000 + 1024, 32768, 2048) == 4
    st = BeaconSettings(window=8, stride=8, ratio=(2, 4, 8), ratio_mix="adapt-4", max_position=16)
    p = Planner(st)
    p.extend(40)
    plans = [p.next_step() for _ in range(5)]
    assert {x.ratio for x in plans} == {8} and all(x.beacon_count == 1 for x in plans)
    assert adapt_ratio([2, 4], 10**9, 16, 8) == 4  # nothing fits: the largest


def test_ratio_filter_and_zero_rules():
    st = BeaconSettings(window=8, stride=8, ratio=(0, 3, 4, 16, 2))
    assert st.candidates() == [0, 4, 2]
    p = Planner(st, training=True)
    p.extend(8 * 12)
    seen = []
    while not p.done:
        seen.append(p.next_step().ratio)
    assert set(seen[:-1]) <= {0, 2, 4} and seen[-1] == -1
    assert seen.count(0) <= 1  # ratio 0 at most once per training sequence
    # ratio 0 needs one more full window after it: with 12 tokens it is never drawn for the first
    for seed in range(20):
        q = Planner(BeaconSettings(window=8, stride=8, ratio=(0, 4), seed=seed), training=True)
        q.extend(12)
        assert q.next_step().ratio == 4


def test_mixes_sequence_instance_and_reset_repeatable():
    q = Planner(BeaconSettings(window=4, stride=4, ratio=(1, 2, 4), ratio_mix="sequence"))
    q.extend(16)
    assert [q.next_step().ratio for _ in range(4)] == [1, 2, 4, 1]
    r = Planner(BeaconSettings(window=4, stride=4, ratio=(1, 2, 4), ratio_mix="instance-random", seed=3))
    r.extend(40)
    assert len({r.next_step().ratio for _ in range(10)}) == 1
    s = Planner(BeaconSettings(window=4, stride=4, ratio=(1, 2, 4), seed=5))
    s.extend(64)
    first = [s.next_step().ratio for _ in range(16)]
    s.reset()
    s.extend(64)
    assert [s.next_step().ratio for _ in range(16)] == first and len(set(first)) > 1


def test_ratio_zero_raw_becomes_memory():
    p = Planner(BeaconSettings(window=8, stride=8, ratio=(0,)))
    p.extend(20)
    plan = p.next_step()
    assert plan.beacon_count == -1 and plan.window_markers == [-1] * 8 and p.sizes() == (0, 8, 0)
    p.next_step(), p.next_step()
    assert p.sizes() == (0, 16, 4)


def test_append_stride_below_window():
    """The reference raises NameError here (§3.10.1); the window advances by S and keeps W - S raw."""
    p = Planner(BeaconSettings(window=8, stride=4, ratio=(2,), pos="append"))
    p.extend(20)
    w1 = p.next_step()
    assert _ids(w1) == list(range(8)) + ["B", "B"] and p.sizes() == (0, 2, 4)
    w2 = p.next_step()
    assert _ids(w2) == [8, 9, 10, 11, "B", "B"] and w2.mem_before == (0, 2, 4) and p.sizes() == (0, 4, 4)
    fed = [a for plan in (w1, w2, *[p.next_step() for _ in range(2)]) for a in plan.src if a >= 0]
    assert fed == list(range(20)) and p.done  # every raw token fed exactly once


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"attn": "segmentation", "pos": "append"}, "segmentation"),
        ({"window": 8, "stride": 4}, "interleave' needs beacon_stride"),
        ({"window": 4, "stride": 8}, "stride <= window"),
        ({"ratio": (3,), "window": 8, "stride": 8, "pos": "append"}, "must divide"),
        ({"ratio": (3, 5), "window": 8, "stride": 8}, "no ratio"),
        ({"ratio_mix": "adapt-10"}, "max_position"),
        ({"ratio_mix": "bogus"}, "valid are"),
        ({"param": ("q", "x")}, "not in"),
        ({"parallel_window": 2}, "only 1"),
        ({"attn": "step-expansion"}, "append"),
    ],
)
def test_refused_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BeaconSettings(**kwargs)


def test_memory_property_random():
    rng = random.Random(0)
    for _ in range(200):
        w = rng.choice([4, 8, 16])
        r = rng.choice([d for d in (1, 2, 4, 8, 16) if w % d == 0])
        n = rng.randint(1, 200)
        pos = rng.choice(["interleave", "append"])
        st = BeaconSettings(window=w, stride=w, ratio=(r,), pos=pos)
        p = Planner(st)
        p.extend(n)
        max_keys = 0
        while not p.done:
            plan = p.next_step()
            max_keys = max(max_keys, plan.mem + len(plan.src))
        assert p.sizes() == memory_formula(n, st, r)
        assert max_keys <= n // r + w + w // r
