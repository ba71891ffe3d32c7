"""Causal-LM cross-entropy computed chunk by chunk, so the ``[T, vocab]`` logits never exist at once.

At 80K tokens and a 128K vocabulary the full fp32 logits alone are ~41 GB (LONG_CONTEXT.md §7.1). Here each
chunk of positions goes through ``lm_head`` and the cross-entropy inside ``torch.utils.checkpoint``: the
forward keeps only the chunk's scalar loss, and the backward recomputes one chunk's logits at a time, so the
peak is ``chunk_size × vocab`` floats in both directions.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

IGNORE_INDEX = -100


def _chunk_nll(hidden: Tensor, lm_head: nn.Module, labels: Tensor) -> Tensor:
    logits = lm_head(hidden)
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()  # the softmax in half precision loses the long tail
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE_INDEX,
                           reduction="sum")


def shift_labels(labels: Tensor) -> Tensor:
    """HF convention: position ``t`` predicts ``labels[t + 1]``; the last position predicts nothing (-100)."""
    pad = torch.full_like(labels[:, :1], IGNORE_INDEX)
    return torch.cat([labels[:, 1:], pad], dim=1)


def chunked_causal_lm_loss(
    hidden: Tensor,
    lm_head: nn.Module,
    labels: Tensor,
    chunk_size: int = 4096,
    reduction: Literal["mean", "sum"] = "mean",
    num_items: int | Tensor | None = None,
    shift: bool = True,
) -> Tensor:
    """Next-token cross-entropy of ``lm_head(hidden)`` against ``labels``, chunked over the sequence.

    Args:
        hidden: final hidden states ``[B, T, H]`` (after the model's last norm).
        lm_head: the output projection (any module mapping ``[..., H]`` to ``[..., V]``).
        labels: ``[B, T]`` token ids, NOT pre-shifted (as for HF ``model(labels=...)``); -100 is ignored.
        chunk_size: positions per chunk (over the flattened ``B × T`` positions); peak logits memory is
            ``chunk_size × V`` floats.
        reduction: ``"mean"`` over the counted (non -100) targets, or ``"sum"``.
        num_items: divide the sum by this instead of the local count (gradient accumulation across micro
            batches, as HF's ``num_items_in_batch``); only with ``reduction="mean"``.
        shift: False when ``labels`` are already aligned with the positions (``labels[t]`` is the target of
            position ``t``, e.g. the beacon trainer's pre-shifted labels).

    Returns:
        A scalar tensor. With no counted target the mean is 0 (and its gradient is zero), not NaN.

    Raises:
        ValueError: on shape mismatch, a non-positive chunk size or an unknown reduction.
    """
    if hidden.dim() != 3:
        raise ValueError(f"hidden must be [B, T, H], got shape {tuple(hidden.shape)}")
    if labels.shape != hidden.shape[:2]:
        raise ValueError(f"labels shape {tuple(labels.shape)} does not match hidden {tuple(hidden.shape[:2])}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    targets = (shift_labels(labels) if shift else labels).reshape(-1)
    flat = hidden.reshape(-1, hidden.shape[-1])
    keep = (targets != IGNORE_INDEX).nonzero(as_tuple=True)[0]  # positions without a target cost nothing
    flat, targets = flat.index_select(0, keep), targets.index_select(0, keep)
    # a zero tied to the graph: with no counted target the loss is 0 and backward still runs (zero gradients)
    total = hidden.sum().float() * 0.0 if hidden.dtype != torch.float64 else hidden.sum() * 0.0
    use_checkpoint = torch.is_grad_enabled() and (flat.requires_grad or _has_grad_params(lm_head))
    for start in range(0, flat.shape[0], chunk_size):
        h, y = flat[start : start + chunk_size], targets[start : start + chunk_size]
        if use_checkpoint:
            part = checkpoint(_chunk_nll, h, lm_head, y, use_reentrant=False)
        else:
            part = _chunk_nll(h, lm_head, y)
        total = total + part.to(total.dtype)
    if reduction == "sum":
        return total
    denom = num_items if num_items is not None else keep.numel()
    if isinstance(denom, Tensor):
        return total / denom.to(total.device).clamp(min=1)
    return total / max(int(denom), 1)


def _has_grad_params(module: nn.Module) -> bool:
    return any(p.requires_grad for p in module.parameters())


def causal_lm_loss(model: Any, input_ids: Tensor, labels: Tensor, attention_mask: Tensor | None = None,
                   chunk_size: int = 4096, **kwargs: Any) -> Tensor:
    """Run an HF causal LM's decoder and score it with :func:`chunked_causal_lm_loss` (no full logits).

    Works for ``*ForCausalLM`` models and peft wrappers of them: the decoder is ``get_decoder()`` of the base
    model and the head is ``get_output_embeddings()``.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder, head = base.get_decoder(), base.get_output_embeddings()
    if decoder is None or head is None:
        raise TypeError(f"{type(base).__name__} has no decoder/output embeddings; not a causal LM")
    out = decoder(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **kwargs)
    return chunked_causal_lm_loss(out[0], head, labels, chunk_size=chunk_size)


__all__ = ["IGNORE_INDEX", "causal_lm_loss", "chunked_causal_lm_loss", "shift_labels"]
