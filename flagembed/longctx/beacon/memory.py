"""Per-layer beacon memory: sink, beacon and raw keys/values, kept pre-RoPE (positions are re-based each step)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from flagembed.longctx.beacon.planner import RAW, StepPlan

KV = tuple[torch.Tensor, torch.Tensor]


class BeaconMemory:
    """Keys/values ``[B, n_kv, len, head_dim]`` per layer in three parts; ``reset()`` empties all of them."""

    def __init__(self, num_layers: int) -> None:
        self.num_layers = num_layers
        self.on_reset: Callable[[], None] | None = None  # set by the session owning this memory
        self.reset()

    def reset(self) -> None:
        """Empty every layer (and reset the owning session's planner and token buffer)."""
        self.clear()
        if self.on_reset is not None:
            self.on_reset()

    def clear(self) -> None:
        self.sink: list[KV | None] = [None] * self.num_layers
        self.beacon: list[KV | None] = [None] * self.num_layers
        self.raw: list[KV | None] = [None] * self.num_layers

    def past(self, layer: int) -> KV | None:
        """Memory keys/values of a layer in attention order: sink, beacon, raw (None when empty)."""
        parts = [p for p in (self.sink[layer], self.beacon[layer], self.raw[layer]) if p is not None]
        if not parts:
            return None
        if len(parts) == 1:
            return parts[0]
        return torch.cat([p[0] for p in parts], dim=2), torch.cat([p[1] for p in parts], dim=2)

    def update(self, layer: int, key: torch.Tensor, value: torch.Tensor, plan: StepPlan) -> None:
        """Move a step's new keys/values into memory as the plan says (sink, raw, or beacon on completion)."""
        n = key.shape[2]
        if plan.sink_rows:
            rows = torch.tensor(plan.sink_rows, device=key.device)
            self.sink[layer] = _cat(self.sink[layer], (key.index_select(2, rows), value.index_select(2, rows)))
            rest = torch.tensor([i for i in range(n) if i not in set(plan.sink_rows)], device=key.device)
            key, value = key.index_select(2, rest), value.index_select(2, rest)
        window = _cat(self.raw[layer], (key, value))
        if window is None or window[0].shape[2] != len(plan.window_markers):
            got = 0 if window is None else window[0].shape[2]
            raise ValueError(f"layer {layer}: {got} window entries but the plan has {len(plan.window_markers)}")
        if not plan.completes:
            self.raw[layer] = window
            return
        markers = plan.window_markers
        keep_b = [i for i, m in enumerate(markers) if m != RAW]
        raws = [i for i, m in enumerate(markers) if m == RAW]
        keep_r = raws[len(raws) - plan.raw_to_cache :] if plan.raw_to_cache else []
        if keep_b:
            rows = torch.tensor(keep_b, device=window[0].device)
            moved = (window[0].index_select(2, rows), window[1].index_select(2, rows))
            self.beacon[layer] = _cat(self.beacon[layer], moved)
        if keep_r:
            rows = torch.tensor(keep_r, device=window[0].device)
            self.raw[layer] = (window[0].index_select(2, rows), window[1].index_select(2, rows))
        else:
            self.raw[layer] = None

    def sizes(self, layer: int = 0) -> tuple[int, int, int]:
        """(sink, beacon, raw) lengths of a layer."""
        return tuple(0 if p is None else p[0].shape[2] for p in (self.sink[layer], self.beacon[layer], self.raw[layer]))

    def nbytes(self) -> int:
        """Bytes held by all memory tensors."""
        return sum(
            t.numel() * t.element_size()
            for parts in (self.sink, self.beacon, self.raw)
            for kv in parts
            if kv is not None
            for t in kv
        )


def _cat(old: KV | None, new: KV) -> KV:
    if old is None:
        return new
    return torch.cat([old[0], new[0]], dim=2), torch.cat([old[1], new[1]], dim=2)
