"""Tokenize without padding, exactly as the tokenizer would with ``truncation=True``, and count truncations."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

CHUNK = 4096  # texts per fast-tokenizer call: large enough for its Rust-side parallelism


@dataclass
class Tokenized:
    """Token ids per text plus which texts were cut to ``max_length``."""

    ids: list[list[int]]
    truncated: np.ndarray  # bool, one per text

    @property
    def num_truncated(self) -> int:
        return int(self.truncated.sum())

    @property
    def num_tokens(self) -> int:
        return sum(len(x) for x in self.ids)


def tokenize(tokenizer: Any, texts: Sequence[str], max_length: int, **kwargs: Any) -> Tokenized:
    """Token ids of ``texts`` truncated to ``max_length`` (special tokens included).

    Texts are tokenized with room for one extra token; only those that overflow are tokenized again
    at ``max_length``, so the result equals the tokenizer's own truncation and the count is exact.
    """
    if max_length < 1:
        raise ValueError(f"max_length must be >= 1, got {max_length}")
    ids: list[list[int]] = []
    for start in range(0, len(texts), CHUNK):
        chunk = list(texts[start : start + CHUNK])
        enc = tokenizer(
            chunk,
            truncation=True,
            max_length=max_length + 1,
            padding=False,
            return_attention_mask=False,
            return_token_type_ids=False,
            **kwargs,
        )["input_ids"]
        ids.extend(enc)
    over = np.fromiter((len(x) > max_length for x in ids), dtype=bool, count=len(ids))
    if over.any():
        where = np.flatnonzero(over)
        redo = tokenizer(
            [texts[i] for i in where],
            truncation=True,
            max_length=max_length,
            padding=False,
            return_attention_mask=False,
            return_token_type_ids=False,
            **kwargs,
        )["input_ids"]
        for i, row in zip(where.tolist(), redo):
            ids[i] = row
    return Tokenized(ids=ids, truncated=over)
