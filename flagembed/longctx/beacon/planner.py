"""Activation Beacon window planner: which tokens a step feeds, where beacons go, positions, masks, memory moves.

Pure Python (no torch), so the algorithm is testable alone. One ``Planner`` follows one sequence: ``extend(n)``
announces new tokens, ``next_step()`` cuts the next step until ``done``. The plan of a step says everything the
runner needs; the planner's own counters mirror the memory sizes the runner will hold after applying it.

Layout rules (LONG_CONTEXT.md §3.4-3.5):
- interleave: one beacon after every r-th raw token of the window, counted across decode steps (remainder);
  a window completes when W raw tokens have been fed; its beacons (or, with r = 0, its raw tokens) become memory.
- append: beacons (S / r of them) are appended after the W raw tokens of a full window; a partial window gets none.
  The window advances by S; its last W - S raw tokens stay in raw memory (the reference crashes here, §3.10.1).
- training: the last window of a sequence carries no beacons; labels of the first window count only for
  interleave + full-coverage (elsewhere beacons of the first window matter only to later windows).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Literal

RatioMix = str  # "step-random" | "instance-random" | "sequence" | "adapt-<future tokens>"
_MIXES = ("step-random", "instance-random", "sequence")
_PARAMS = ("q", "k", "v", "o")
RAW, BEACON, RAW_AS_BEACON = 0, 1, -1


@dataclass(frozen=True)
class BeaconSettings:
    """The ``beacon_*`` options of the reference (same names without the prefix, same defaults)."""

    window: int = 1024
    stride: int = 1024
    attn: Literal["full-coverage", "step-expansion", "segmentation"] = "full-coverage"
    ratio: tuple[int, ...] = (2, 4, 8, 16, 32)
    ratio_mix: RatioMix = "step-random"
    param: tuple[str, ...] = ("q", "k", "v")
    embed_init: Literal["eos", "bos"] = "eos"
    sink_size: int = 0
    attend_prev: bool = True
    pos: Literal["interleave", "append"] = "interleave"
    parallel_window: int = 1
    max_position: int | None = None  # P of the adapt-F rule: max_position_embeddings x rope factor
    seed: int = 42

    def __post_init__(self) -> None:
        object.__setattr__(self, "ratio", tuple(int(r) for r in self.ratio))
        object.__setattr__(self, "param", tuple(self.param))
        w, s = self.window, self.stride
        if w < 1 or not 1 <= s <= w:
            raise ValueError(f"beacon_window={w} and beacon_stride={s}: need 1 <= stride <= window")
        if self.pos not in ("interleave", "append"):
            raise ValueError(f"beacon_pos={self.pos!r}: valid are 'interleave', 'append'")
        if self.pos == "interleave" and s != w:
            raise ValueError(f"beacon_pos='interleave' needs beacon_stride == beacon_window, got {s} != {w}")
        if self.attn == "segmentation":
            raise ValueError(
                "beacon_attn='segmentation' is not supported (the reference crashes on it); "
                "use 'full-coverage' or 'step-expansion'"
            )
        if self.attn not in ("full-coverage", "step-expansion"):
            raise ValueError(f"beacon_attn={self.attn!r}: valid are 'full-coverage', 'step-expansion'")
        if self.attn == "step-expansion" and self.pos != "append":
            raise ValueError("beacon_attn='step-expansion' is supported with beacon_pos='append' only")
        if not self.ratio or any(r < 0 for r in self.ratio):
            raise ValueError(f"beacon_ratio={list(self.ratio)}: need one or more ratios >= 0")
        if len(self.ratio) == 1:
            r = self.ratio[0]
            if r > s or (self.pos == "append" and r and s % r):
                raise ValueError(f"beacon_ratio={r} with beacon_stride={s}: the ratio must divide the stride")
        elif not self.candidates():
            raise ValueError(f"beacon_ratio={list(self.ratio)}: no ratio r <= stride {s} with stride % r == 0")
        mix = self.ratio_mix
        if mix not in _MIXES and not (mix.startswith("adapt-") and mix[6:].isdigit()):
            raise ValueError(f"beacon_ratio_mix={mix!r}: valid are {', '.join(_MIXES)}, adapt-<int>")
        if mix.startswith("adapt-") and self.max_position is None:
            raise ValueError("beacon_ratio_mix='adapt-F' needs max_position (max_position_embeddings)")
        if bad := [p for p in self.param if p not in _PARAMS]:
            raise ValueError(f"beacon_param={list(self.param)}: {bad} not in {list(_PARAMS)}")
        if self.embed_init not in ("eos", "bos"):
            raise ValueError(f"beacon_embed_init={self.embed_init!r}: valid are 'eos', 'bos'")
        positive = [r for r in self.ratio if r > 0]
        if not 0 <= self.sink_size < w:
            raise ValueError(f"beacon_sink_size={self.sink_size}: need 0 <= sink < window {w}")
        if self.pos == "interleave" and positive and self.sink_size > min(positive):
            raise ValueError(f"beacon_sink_size={self.sink_size} exceeds the smallest ratio {min(positive)}")
        if self.parallel_window != 1:
            raise ValueError(f"beacon_parallel_window={self.parallel_window}: only 1 is supported")

    def candidates(self) -> list[int]:
        """Ratios a multi-ratio list may draw: r = 0, or r <= stride with stride % r == 0 (the reference filter)."""
        return [r for r in self.ratio if r == 0 or (r <= self.stride and self.stride % r == 0)]

    def to_config(self) -> dict[str, Any]:
        """The reference's ``beacon_*`` config keys."""
        return {
            "beacon_window": self.window,
            "beacon_stride": self.stride,
            "beacon_attn": self.attn,
            "beacon_ratio": list(self.ratio),
            "beacon_ratio_mix": self.ratio_mix,
            "beacon_param": list(self.param),
            "beacon_embed_init": self.embed_init,
            "beacon_sink_size": self.sink_size,
            "beacon_attend_prev": self.attend_prev,
            "beacon_pos": self.pos,
            "beacon_parallel_window": self.parallel_window,
        }

    @classmethod
    def from_config(cls, config: Any, **overrides: Any) -> BeaconSettings:
        """Read ``beacon_*`` attributes of an HF config (missing ones take the defaults), then ``overrides``."""
        values: dict[str, Any] = {}
        for name in cls.__dataclass_fields__:
            if hasattr(config, f"beacon_{name}"):
                values[name] = getattr(config, f"beacon_{name}")
        if "max_position" not in overrides and getattr(config, "max_position_embeddings", None):
            values["max_position"] = int(config.max_position_embeddings * _rope_factor(config))
        if isinstance(values.get("ratio"), int):
            values["ratio"] = (values["ratio"],)
        given = {k: v for k, v in overrides.items() if v is not None}
        if "stride" not in given and ("window" in given or "stride" not in values):
            given["stride"] = given.get("window", values.get("window", cls.window))
        values.update(given)
        return cls(**values)


def _rope_factor(config: Any) -> float:
    for key in ("rope_scaling", "rope_parameters"):
        spec = getattr(config, key, None)
        if isinstance(spec, dict) and spec.get("factor"):
            return float(spec["factor"])
    return 1.0


@dataclass
class StepPlan:
    """One step: the tokens fed, their positions and visibility, and how memory changes after it.

    ``src[i]`` is the absolute index of step token i in the sequence, or -1 for a beacon. ``window_markers``
    covers the raw-memory entries kept from earlier partial steps of this window followed by the step's
    non-sink tokens (0 raw, 1 beacon, -1 raw kept as beacon with ratio 0).
    """

    src: list[int]
    positions: list[int]
    mem_before: tuple[int, int, int]
    sink_rows: list[int]
    window_markers: list[int]
    completes: bool
    raw_to_cache: int
    ratio: int
    beacon_count: int
    loss: bool
    beacon_visible: dict[int, list[tuple[int, int]]] = field(default_factory=dict)

    @property
    def beacon_rows(self) -> list[int]:
        return [i for i, s in enumerate(self.src) if s < 0]

    @property
    def raw_rows(self) -> list[int]:
        return [i for i, s in enumerate(self.src) if s >= 0]

    @property
    def mem(self) -> int:
        return sum(self.mem_before)


class Planner:
    """Cuts one sequence into beacon steps (see the module docstring)."""

    def __init__(self, settings: BeaconSettings, training: bool = False) -> None:
        self.settings = settings
        self.training = training
        self.reset()

    def reset(self) -> None:
        """Forget the sequence; the ratio RNG is reseeded, so a reset makes runs repeatable."""
        self.total = 0
        self.start = 0  # first raw token of the current window
        self.end = 0  # raw tokens consumed
        self.steps = 0
        self._remainder = 0
        self._window_ratio: int | None = None
        self._prev_full = True
        self._seq_ratio: int | None = None
        self._cursor = 0
        self._used_zero = False
        self._cached: list[int] = []  # markers of the raw-memory entries
        self.sink = 0
        self.beacon = 0
        self.window_ratios: list[int] = []
        self._rng = random.Random(self.settings.seed)

    def extend(self, n: int) -> None:
        """Announce ``n`` new tokens of the sequence."""
        if n < 0:
            raise ValueError(f"extend({n}): need n >= 0")
        self.total += n

    @property
    def done(self) -> bool:
        return self.end >= self.total

    def sizes(self) -> tuple[int, int, int]:
        """(sink, beacon, raw) memory lengths after the steps so far."""
        return self.sink, self.beacon, len(self._cached)

    def choose_ratio(self) -> int:
        """The ratio of a new window, by ``ratio_mix`` (LONG_CONTEXT.md §3.3)."""
        st = self.settings
        if len(st.ratio) == 1:
            return st.ratio[0]
        mix = st.ratio_mix
        if self._seq_ratio is not None and (mix == "instance-random" or mix.startswith("adapt-")):
            return self._seq_ratio
        valid = st.candidates()
        if self.training and 0 in valid:
            more = self.start + st.stride + st.window <= self.total  # at least one more full window follows
            if self._used_zero or not more:
                valid = [r for r in valid if r]
        if not valid:
            raise ValueError(f"beacon_ratio={list(st.ratio)}: no ratio is valid for the window at {self.start}")
        if mix == "step-random":
            return self._rng.choice(valid)
        if mix == "sequence":
            r = valid[self._cursor % len(valid)]
            self._cursor += 1
            return r
        if mix == "instance-random":
            self._seq_ratio = self._rng.choice(valid)
            return self._seq_ratio
        self._seq_ratio = adapt_ratio(valid, self.total + int(mix[6:]), st.max_position or 0, st.window)
        return self._seq_ratio

    def next_step(self) -> StepPlan:
        """Plan the next step and advance the counters as if the runner had applied it."""
        st = self.settings
        if self.done:
            raise ValueError(f"no tokens left to plan: {self.end} of {self.total} consumed")
        w, s = st.window, st.stride
        start, consumed = self.start, self.end
        end = min(start + w, self.total)
        full = start + w <= self.total
        n_new = end - consumed
        mem_before = self.sizes()
        mem = sum(mem_before)
        raw_src = list(range(consumed, end))
        src: list[int] = list(raw_src)
        ratio, count, completes, raw_to_cache = -1, 0, False, 0
        if self.training and end == self.total:
            pass  # last training window: no beacons, keep all raw
        elif st.pos == "append":
            if full:
                ratio = self.choose_ratio()
                count = s // ratio if ratio else -1
                completes, raw_to_cache = True, w - s
                src += [-1] * max(count, 0)
        else:
            if self._prev_full:
                self._window_ratio = self.choose_ratio()
            ratio = self._window_ratio if self._window_ratio is not None else -1
            if ratio > 0:
                src = []
                for i, a in enumerate(raw_src):
                    src.append(a)
                    if (self._remainder + i + 1) % ratio == 0:
                        src.append(-1)
                count = (n_new + self._remainder) // ratio
                self._remainder = (n_new + self._remainder) % ratio
            elif ratio == 0:
                count = -1
            completes = full
        if ratio == 0 and completes:
            self._used_zero = True
        sink_rows = [i for i, a in enumerate(src) if 0 <= a < st.sink_size]
        markers = self._cached + [RAW if a >= 0 else BEACON for i, a in enumerate(src) if i not in sink_rows]
        if completes and ratio == 0:  # raw KV of the window's first S raw tokens becomes memory
            raw_idx = [j for j, m in enumerate(markers) if m == RAW][:s]
            for j in raw_idx:
                markers[j] = RAW_AS_BEACON
        positions = list(range(mem, mem + len(src)))
        visible: dict[int, list[tuple[int, int]]] = {}
        if st.attn == "step-expansion" and count > 0:
            positions, visible = self._step_expansion(src, mem_before, ratio)
        loss = st.pos == "interleave" and st.attn == "full-coverage" or start > 0
        plan = StepPlan(
            src=src,
            positions=positions,
            mem_before=mem_before,
            sink_rows=sink_rows,
            window_markers=markers,
            completes=completes,
            raw_to_cache=raw_to_cache,
            ratio=ratio,
            beacon_count=count,
            loss=loss,
            beacon_visible=visible,
        )
        # advance, mirroring the memory update
        self.sink += len(sink_rows)
        self.end = end
        self.steps += 1
        if completes:
            self.beacon += sum(1 for m in markers if m != RAW)
            raws = [m for m in markers if m == RAW]
            self._cached = raws[len(raws) - raw_to_cache :] if raw_to_cache else []
            self.window_ratios.append(ratio)
            self.start = start + s
            self._remainder = 0
        else:
            self._cached = markers
        self._prev_full = completes
        return plan

    def _step_expansion(
        self, src: list[int], mem_before: tuple[int, int, int], ratio: int
    ) -> tuple[list[int], dict[int, list[tuple[int, int]]]]:
        """Append + step-expansion: beacon j sees the window's first j*r raw tokens (+ earlier beacons)."""
        sink, beacon, raw = mem_before
        mem, fixed = sink + beacon + raw, sink + beacon
        n_raw = sum(1 for a in src if a >= 0)
        n_cached = raw  # append mode: the raw memory holds only raw tokens of this window

        def raw_pos(k: int) -> int:  # position of window raw token k
            return fixed + k if k < n_cached else mem + (k - n_cached)

        positions = list(range(mem, mem + n_raw))
        visible: dict[int, list[tuple[int, int]]] = {}
        n_beacons = len(src) - n_raw
        for j in range(1, n_beacons + 1):
            row = n_raw + j - 1
            positions.append(raw_pos(j * ratio - 1) + (j if self.settings.attend_prev else 1))
            upto = j * ratio
            ranges = [(0, fixed), (fixed, fixed + min(upto, n_cached))]
            if upto > n_cached:
                ranges.append((mem, mem + upto - n_cached))
            first = mem + n_raw if self.settings.attend_prev else mem + row
            ranges.append((first, mem + row + 1))
            visible[row] = [(a, b) for a, b in ranges if b > a]
        return positions, visible


def adapt_ratio(valid: list[int], length: int, max_position: int, window: int) -> int:
    """adapt-F: the ratio with the smallest capacity (P - W) * r + W that holds ``length``; else the largest."""
    fits = sorted((capacity(r, max_position, window), r) for r in valid if capacity(r, max_position, window) >= length)
    return fits[0][1] if fits else max(valid)


def capacity(ratio: int, max_position: int, window: int) -> int:
    """Tokens a ratio can hold before positions pass ``max_position``: (P - W) * r + W."""
    return (max_position - window) * ratio + window


def memory_formula(n: int, settings: BeaconSettings, ratio: int) -> tuple[int, int, int]:
    """(sink, beacon, raw) memory after n prompt tokens at a fixed ratio > 0 with S == W (LONG_CONTEXT.md §3.8)."""
    w, s = settings.window, settings.sink_size
    full, tail = divmod(n, w)
    raw = tail + (tail // ratio if settings.pos == "interleave" else 0)
    sink = min(s, n)
    if full == 0:
        raw -= sink
    return sink, full * (w // ratio), raw
