"""Tokenization overlapped with model execution: a bounded one-chunk-ahead producer.

While the model runs the batches of chunk ``i``, a background thread tokenizes chunk ``i + 1`` (fast
tokenizers release the GIL in their Rust batch call). Only one chunk is ever waiting, so memory stays
bounded; an error in either thread re-raises in the caller and the prefetch is cancelled. Length sorting
happens within a chunk, so chunks should hold thousands of texts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from flagembed.engine.progress import progress_bar
from flagembed.engine.runner import EngineConfig, Step, run_batches
from flagembed.engine.tokenize import Tokenized


def run_pipelined(
    texts: Sequence[str],
    tokenize_fn: Callable[[Sequence[str]], Tokenized],
    step: Step,
    config: EngineConfig,
    *,
    chunk_size: int = 4096,
    show_progress: bool | None = None,
    desc: str = "Encoding",
) -> tuple[Any, int]:
    """Tokenize chunk ``i + 1`` while chunk ``i`` runs; return outputs in input order and the truncation count."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    starts = list(range(0, len(texts), chunk_size))
    parts: list[Any] = []
    truncated = 0
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="flagembed-tokenize") as pool:
        pending: Future[Tokenized] | None = pool.submit(tokenize_fn, texts[0:chunk_size]) if starts else None
        try:
            with progress_bar(len(texts), show_progress, desc) as bar:
                for k in range(len(starts)):
                    tok = pending.result()  # type: ignore[union-attr]  # re-raises a tokenizer error here
                    nxt = starts[k + 1] if k + 1 < len(starts) else None
                    pending = pool.submit(tokenize_fn, texts[nxt : nxt + chunk_size]) if nxt is not None else None
                    truncated += tok.num_truncated
                    parts.append(run_batches(tok.ids, step, config, show_progress=False))
                    bar.update(len(tok.ids))
        finally:
            if pending is not None:
                pending.cancel()
    return _join(parts), truncated


def _join(parts: list[Any]) -> Any:
    if not parts:
        return []
    if isinstance(parts[0], np.ndarray):
        return np.concatenate(parts, axis=0)
    return [item for part in parts for item in part]
