"""Batching engine: tokenize → length-sort → token-budget batches → run → restore order."""

from flagembed.engine.batching import pad_ids, plan_batches
from flagembed.engine.devices import resolve_device, resolve_dtype
from flagembed.engine.progress import progress_bar
from flagembed.engine.runner import Batch, EngineConfig, OutOfMemoryOnItemError, run_batches
from flagembed.engine.tokenize import Tokenized, tokenize

__all__ = [
    "Batch",
    "EngineConfig",
    "OutOfMemoryOnItemError",
    "Tokenized",
    "pad_ids",
    "plan_batches",
    "progress_bar",
    "resolve_device",
    "resolve_dtype",
    "run_batches",
    "tokenize",
]
