"""Calls into any causal LM with the HF interface: ``model(input_ids=, labels=)`` and ``model.generate(...)``.

The harness needs nothing else from a model, so plain HF models, peft models, RoPE-extended models and the
beacon runtime are all evaluated by the same code.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import torch


def model_device(model: Any) -> torch.device:
    """The device of the model's first parameter (CPU for a parameter-less fake)."""
    params = getattr(model, "parameters", None)
    if params is None:
        return torch.device("cpu")
    for p in params():
        return p.device
    return torch.device("cpu")


def reset_memory(model: Any) -> None:
    """Clear per-example state of memory models (beacon ``model.memory.reset()``); no-op for plain models."""
    memory = getattr(model, "memory", None)
    if memory is not None and hasattr(memory, "reset"):
        memory.reset()


@torch.no_grad()
def generate_text(model: Any, tokenizer: Any, input_ids: Sequence[int], max_new_tokens: int) -> str:
    """Greedy continuation of ``input_ids``, decoded without special tokens."""
    reset_memory(model)
    ids = torch.tensor([list(input_ids)], dtype=torch.long, device=model_device(model))
    out = model.generate(input_ids=ids, max_new_tokens=max_new_tokens, do_sample=False)
    out = out.sequences if hasattr(out, "sequences") else out
    return tokenizer.decode(out[0, ids.shape[1] :].tolist(), skip_special_tokens=True)


@torch.no_grad()
def sequence_loss(model: Any, input_ids: Sequence[int], labels: Sequence[int]) -> tuple[float, int]:
    """(mean NLL, number of counted targets) of one sequence; labels follow HF (not shifted, -100 ignored)."""
    reset_memory(model)
    device = model_device(model)
    ids = torch.tensor([list(input_ids)], dtype=torch.long, device=device)
    lab = torch.tensor([list(labels)], dtype=torch.long, device=device)
    count = int((lab[:, 1:] != -100).sum())
    if count == 0:
        return 0.0, 0
    loss = model(input_ids=ids, labels=lab).loss
    return float(loss), count


class Stopwatch:
    """Wall time and (on CUDA) peak allocated memory of a block, for the harness records."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.seconds = 0.0
        self.peak_mib: float | None = None

    def __enter__(self) -> Stopwatch:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        self._t = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.seconds = time.perf_counter() - self._t
        if self.device.type == "cuda":
            self.peak_mib = torch.cuda.max_memory_allocated(self.device) / 2**20


def safe_exp(x: float) -> float:
    """exp(x), inf instead of OverflowError (a diverged model's perplexity)."""
    try:
        return math.exp(x)
    except OverflowError:
        return math.inf


__all__ = ["Stopwatch", "generate_text", "model_device", "reset_memory", "safe_exp", "sequence_loss"]
