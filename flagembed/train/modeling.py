"""Embedding a training batch through the shared TextEncoder, and the gradient cache.

The model the HF ``Trainer`` holds is the bare backbone (a ``PreTrainedModel`` or peft model), so
checkpoints, resume, DeepSpeed and LoRA saving are the Trainer's own; pooling and normalization
come from :class:`flagembed.models.TextEncoder` (``embed``), the same code inference uses.

Gradient cache (Gao et al., 2021): embed all sub-batches without a graph, compute the loss and its
gradient with respect to the embeddings, then re-embed each sub-batch with a graph (same dropout
masks, restored from the saved RNG state) and back-propagate the cached gradient. Peak activation
memory is one sub-batch, the gradient equals full-batch training.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from flagembed.models import TextEncoder

Inputs = dict[str, torch.Tensor]


def embed_batch(model: nn.Module, encoder: TextEncoder, batch: Inputs) -> torch.Tensor:
    """Embeddings ``(B, D)`` of a padded batch: ``model`` (possibly DDP-wrapped) → TextEncoder pooling."""
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
    return encoder.embed(hidden, batch["attention_mask"])


def split_batch(batch: Inputs, size: int | None) -> list[Inputs]:
    """Row chunks of at most ``size`` (the whole batch when ``size`` is ``None``), trimmed to their longest row."""
    n = batch["input_ids"].shape[0]
    if not size or size >= n:
        return [batch]
    chunks = []
    for start in range(0, n, size):
        part = {k: v[start : start + size] for k, v in batch.items()}
        mask = part["attention_mask"]
        keep = mask.any(dim=0)  # drop columns that are padding in every row of this chunk
        if not bool(keep.all()):
            idx = torch.nonzero(keep).squeeze(1)
            lo, hi = int(idx.min()), int(idx.max()) + 1
            part = {k: v[:, lo:hi] for k, v in part.items()}
        chunks.append(part)
    return chunks


class RandState:
    """CPU and CUDA generator states, to replay the same dropout masks in the second pass."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cpu = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None

    @contextlib.contextmanager
    def replay(self) -> Iterator[None]:
        """Run the block with the saved states, restoring the current ones afterwards."""
        devices = [self.device] if self.cuda is not None else []
        with torch.random.fork_rng(devices=devices):
            torch.set_rng_state(self.cpu)
            if self.cuda is not None:
                torch.cuda.set_rng_state(self.cuda, self.device)
            yield


def grad_cache_step(
    embed: Callable[[Inputs], torch.Tensor],
    queries: list[Inputs],
    passages: list[Inputs],
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    backward: Callable[[torch.Tensor], None],
    *,
    autocast: Callable[[], Any] = contextlib.nullcontext,
    no_sync: Callable[[], Any] = contextlib.nullcontext,
) -> torch.Tensor:
    """One training step over sub-batches with a gradient cache; returns the (detached) loss.

    Args:
        embed: sub-batch → embeddings (runs the model).
        queries, passages: sub-batches, in order.
        loss_fn: ``(q, p) → loss`` on the concatenated embeddings (already scaled as it should be
            back-propagated, e.g. divided by the gradient-accumulation steps).
        backward: back-propagates a scalar into the model (``accelerator.backward``).
        autocast: context for the model forward passes (mixed precision).
        no_sync: context that suspends DDP gradient all-reduce (used for all but the last sub-batch).
    """
    chunks = [("q", c) for c in queries] + [("p", c) for c in passages]
    device = queries[0]["input_ids"].device
    states, reps = [], []
    with torch.no_grad():
        for _, chunk in chunks:
            states.append(RandState(device))
            with autocast():
                reps.append(embed(chunk).float())
    q = torch.cat([r for (kind, _), r in zip(chunks, reps) if kind == "q"]).requires_grad_()
    p = torch.cat([r for (kind, _), r in zip(chunks, reps) if kind == "p"]).requires_grad_()
    loss = loss_fn(q, p)
    loss.backward()
    grads = {"q": q.grad, "p": p.grad}
    offsets = {"q": 0, "p": 0}
    for i, ((kind, chunk), state) in enumerate(zip(chunks, states)):
        n = chunk["input_ids"].shape[0]
        cached = grads[kind][offsets[kind] : offsets[kind] + n]  # type: ignore[index]
        offsets[kind] += n
        last = i == len(chunks) - 1
        with state.replay(), contextlib.nullcontext() if last else no_sync():
            with autocast():
                rep = embed(chunk).float()
            backward(torch.dot(rep.flatten(), cached.flatten()))
    return loss.detach()
