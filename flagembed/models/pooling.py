"""Pooling of token states into one vector per text: the only place this math lives."""

from __future__ import annotations

from typing import Literal, get_args

import torch
import torch.nn.functional as F

PoolingMethod = Literal["cls", "mean", "last_token"]
POOLING_METHODS: tuple[str, ...] = get_args(PoolingMethod)


def check_pooling(method: str) -> PoolingMethod:
    """Validate a pooling name; the error lists the valid ones."""
    if method not in POOLING_METHODS:
        raise ValueError(f"unknown pooling method {method!r}; valid: {', '.join(POOLING_METHODS)}")
    return method  # type: ignore[return-value]


def pool(hidden: torch.Tensor, mask: torch.Tensor, method: PoolingMethod) -> torch.Tensor:
    """Pool ``hidden`` (B, L, H) under ``mask`` (B, L) with FlagEmbedding's exact formulas.

    ``cls`` takes position 0; ``mean`` averages unmasked states; ``last_token`` takes the last real
    token, detecting left padding when every row's last position is real (REFERENCE.md §2.1).
    """
    if method == "cls":
        return hidden[:, 0]
    if method == "mean":
        # accumulate in float32: half-precision sums over long texts lose digits
        h = hidden.float()
        m = mask.unsqueeze(-1).to(h.dtype)
        return (h * m).sum(dim=1) / mask.sum(dim=1, keepdim=True).to(h.dtype)
    if method == "last_token":
        return last_token(hidden, mask)
    raise ValueError(f"unknown pooling method {method!r}; valid: {', '.join(POOLING_METHODS)}")


def last_token(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Value at the last real position of each row (hidden states or logits)."""
    if bool((mask[:, -1].sum() == mask.shape[0]).item()):  # left padding: last column is real everywhere
        return values[:, -1]
    ends = mask.sum(dim=1) - 1
    return values[torch.arange(values.shape[0], device=values.device), ends]


def finalize(emb: torch.Tensor, truncate_dim: int | None, normalize: bool) -> torch.Tensor:
    """Matryoshka truncation (before normalization, as the reference does), then optional L2 norm."""
    if truncate_dim is not None:
        emb = emb[..., :truncate_dim]
    if normalize:
        emb = F.normalize(emb, dim=-1)
    return emb
