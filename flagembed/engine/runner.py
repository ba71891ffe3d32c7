"""Run a model callable over token-id lists: length-sorted token-budget batches, OOM split, order restore.

The engine knows nothing about BGE: callers hand it token ids and a ``step`` that maps one padded
batch to per-item outputs. Every capability (embedding, M3, reranking, serving) runs through here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from flagembed._compat import cuda_oom_error_types
from flagembed.engine.batching import pad_ids, plan_batches
from flagembed.engine.progress import progress_bar

logger = logging.getLogger(__name__)

OOM_ERRORS: tuple[type[BaseException], ...] = cuda_oom_error_types()


@dataclass
class Batch:
    """One padded batch handed to a step function."""

    indices: np.ndarray  # positions of these items in the caller's input list
    input_ids: torch.Tensor
    attention_mask: torch.Tensor

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def padded_tokens(self) -> int:
        return int(self.input_ids.numel())


@dataclass
class EngineConfig:
    """How batches are formed and where they run."""

    device: torch.device
    batch_size: int = 256
    max_tokens_per_batch: int | None = None
    pad_id: int = 0
    padding_side: Literal["left", "right"] = "right"
    pad_to_multiple_of: int | None = None


StepOutput = torch.Tensor | np.ndarray | list[Any]
Step = Callable[[Batch], StepOutput]


class OutOfMemoryOnItemError(RuntimeError):
    """A single input does not fit in accelerator memory even alone."""


def run_batches(
    token_ids: Sequence[Sequence[int]],
    step: Step,
    config: EngineConfig,
    *,
    show_progress: bool | None = None,
    desc: str = "Encoding",
) -> Any:
    """Apply ``step`` to every item and return outputs in input order.

    ``step`` returns a tensor/array with one row per batch item (results are stacked into one
    array) or a list with one entry per item (results come back as a list).

    Raises:
        OutOfMemoryOnItemError: one item alone does not fit; names the input index.
    """
    n = len(token_ids)
    lengths = np.fromiter((len(t) for t in token_ids), dtype=np.int64, count=n)
    batches = plan_batches(lengths, config.batch_size, config.max_tokens_per_batch)
    collector = _Collector(n)
    limit = [None]  # padded-token ceiling learned from an out-of-memory error, shared by later batches
    with progress_bar(n, show_progress, desc) as bar:
        for idx in batches:
            for sub_idx, out in _run_split(idx, token_ids, lengths, step, config, limit):
                collector.put(sub_idx, out)
            bar.update(len(idx))
    return collector.result()


def _make_batch(idx: np.ndarray, token_ids: Sequence[Sequence[int]], config: EngineConfig) -> Batch:
    ids, mask = pad_ids([token_ids[i] for i in idx], config.pad_id, config.padding_side, config.pad_to_multiple_of)
    non_blocking = config.device.type == "cuda"
    ids_t = torch.from_numpy(ids)
    mask_t = torch.from_numpy(mask)
    if non_blocking:
        ids_t, mask_t = ids_t.pin_memory(), mask_t.pin_memory()
    return Batch(
        indices=idx,
        input_ids=ids_t.to(config.device, non_blocking=non_blocking),
        attention_mask=mask_t.to(config.device, non_blocking=non_blocking),
    )


def _run_split(
    idx: np.ndarray,
    token_ids: Sequence[Sequence[int]],
    lengths: np.ndarray,
    step: Step,
    config: EngineConfig,
    limit: list[int | None],
) -> list[tuple[np.ndarray, StepOutput]]:
    """Run one planned batch, halving it on out-of-memory until single items."""
    padded = len(idx) * int(lengths[idx].max(initial=0))
    if limit[0] is not None and padded > limit[0] and len(idx) > 1:
        half = len(idx) // 2
        return _run_split(idx[:half], token_ids, lengths, step, config, limit) + _run_split(
            idx[half:], token_ids, lengths, step, config, limit
        )
    try:
        return [(idx, step(_make_batch(idx, token_ids, config)))]
    except OOM_ERRORS as exc:
        if config.device.type == "cuda":
            torch.cuda.empty_cache()
        if len(idx) == 1:
            i = int(idx[0])
            raise OutOfMemoryOnItemError(
                f"out of memory on input {i} ({int(lengths[i])} tokens) even in a batch of one; "
                "lower max_length or use a device with more memory"
            ) from exc
        limit[0] = padded - 1 if limit[0] is None else min(limit[0], padded - 1)
        logger.warning("out of memory on a batch of %d items (%d padded tokens); splitting it", len(idx), padded)
        half = len(idx) // 2
        return _run_split(idx[:half], token_ids, lengths, step, config, limit) + _run_split(
            idx[half:], token_ids, lengths, step, config, limit
        )


class _Collector:
    """Places per-batch outputs at their original positions."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.array: np.ndarray | None = None
        self.items: list[Any] | None = None

    def put(self, idx: np.ndarray, out: StepOutput) -> None:
        if isinstance(out, torch.Tensor):
            out = out.detach().cpu().numpy()
        if isinstance(out, np.ndarray):
            if len(out) != len(idx):
                raise ValueError(f"step returned {len(out)} rows for a batch of {len(idx)}")
            if self.array is None:
                self.array = np.empty((self.n, *out.shape[1:]), dtype=out.dtype)
            self.array[idx] = out
            return
        if len(out) != len(idx):
            raise ValueError(f"step returned {len(out)} items for a batch of {len(idx)}")
        if self.items is None:
            self.items = [None] * self.n
        for i, item in zip(idx.tolist(), out):
            self.items[i] = item

    def result(self) -> Any:
        if self.array is not None:
            return self.array
        return self.items if self.items is not None else []
