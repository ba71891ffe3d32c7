"""Length-sorted, token-budget batch planning and padding (no model knowledge here)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np


def plan_batches(
    lengths: Sequence[int] | np.ndarray, batch_size: int, max_tokens: int | None = None
) -> list[np.ndarray]:
    """Group item indices into batches, longest first.

    A batch holds at most ``batch_size`` items and, when ``max_tokens`` is set, at most
    ``max_tokens`` padded tokens (items x longest item). An item longer than the budget runs alone.

    Returns:
        Index arrays into ``lengths``; their concatenation is a permutation of ``range(len(lengths))``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if max_tokens is not None and max_tokens < 1:
        raise ValueError(f"max_tokens_per_batch must be >= 1, got {max_tokens}")
    lens = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(-lens, kind="stable")
    batches: list[np.ndarray] = []
    start, n = 0, len(order)
    while start < n:
        size = batch_size
        if max_tokens is not None:
            size = min(size, max(1, max_tokens // max(int(lens[order[start]]), 1)))
        batches.append(order[start : start + size])
        start += size
    return batches


def pad_ids(
    seqs: Sequence[Sequence[int]],
    pad_id: int,
    side: Literal["left", "right"] = "right",
    pad_to_multiple_of: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Pad token-id lists into ``(input_ids, attention_mask)`` int64 arrays of shape (B, L)."""
    longest = max((len(s) for s in seqs), default=0)
    if pad_to_multiple_of:
        longest = -(-longest // pad_to_multiple_of) * pad_to_multiple_of
    ids = np.full((len(seqs), longest), pad_id, dtype=np.int64)
    mask = np.zeros((len(seqs), longest), dtype=np.int64)
    for row, seq in enumerate(seqs):
        n = len(seq)
        if n == 0:
            continue
        if side == "right":
            ids[row, :n] = seq
            mask[row, :n] = 1
        else:
            ids[row, longest - n :] = seq
            mask[row, longest - n :] = 1
    return ids, mask
