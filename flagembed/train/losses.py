"""Contrastive and distillation losses: functions of embeddings and scores (REFERENCE.md §3.4).

Layout: ``q`` is ``(B, D)``, ``p`` is ``(B*G, D)`` with query ``i``'s group at rows ``i*G .. i*G+G-1``
(its positive first). Scores are ``q @ p.T / temperature``; the target of query ``i`` is column ``i*G``.

Cross-device negatives gather ``q``, ``p`` (with gradient), teacher scores and flags from every
process, so each process computes the loss of the global batch. The gather is differentiable
(backward all-reduces the gradient): after DDP averages gradients, the update equals
single-process training on the concatenated batch (the reference keeps only the local slice's
gradient, which scales the step by ``1/world_size``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F

KDLossType = Literal["kl_div", "m3_kd_loss"]


def world_size() -> int:
    """Number of processes in the default group (1 when torch.distributed is not initialized)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size()
    return 1


class _GatherWithGrad(torch.autograd.Function):
    """All-gather along dim 0; backward sums the gradient over processes and returns this one's slice."""

    @staticmethod
    def forward(ctx: Any, t: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(t) for _ in range(torch.distributed.get_world_size())]
        torch.distributed.all_gather(parts, t.contiguous())
        ctx.rows = (torch.distributed.get_rank() * t.shape[0], t.shape[0])
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        torch.distributed.all_reduce(grad)
        start, n = ctx.rows
        return grad[start : start + n]


def gather_with_grad(t: torch.Tensor) -> torch.Tensor:
    """Concatenate ``t`` (same shape on every process) along dim 0; gradients flow back to every process."""
    if world_size() == 1:
        return t
    return _GatherWithGrad.apply(t)


def gather_no_grad(t: torch.Tensor) -> torch.Tensor:
    """Concatenate ``t`` from all processes along dim 0 (no gradient; for teacher scores and flags)."""
    n = world_size()
    if n == 1:
        return t
    parts = [torch.empty_like(t) for _ in range(n)]
    torch.distributed.all_gather(parts, t.contiguous())
    return torch.cat(parts, dim=0)


def group_size_of(q: torch.Tensor, p: torch.Tensor) -> int:
    """Passages per query ``G`` from the shapes.

    Raises:
        ValueError: ``p`` rows are not a positive multiple of ``q`` rows.
    """
    if q.ndim != 2 or p.ndim != 2 or q.shape[1] != p.shape[1]:
        raise ValueError(f"expected q (B, D) and p (B*G, D), got {tuple(q.shape)} and {tuple(p.shape)}")
    if len(q) == 0 or len(p) % len(q) or len(p) < len(q):
        raise ValueError(f"passage rows ({len(p)}) must be a positive multiple of query rows ({len(q)})")
    return len(p) // len(q)


def own_group(scores: torch.Tensor, group_size: int) -> torch.Tensor:
    """Each query's scores against its own group: ``(B, G)`` out of ``(B, B*G)``."""
    rows = torch.arange(scores.shape[0], device=scores.device)
    cols = rows[:, None] * group_size + torch.arange(group_size, device=scores.device)[None, :]
    return scores.gather(1, cols)


def restrict_to_own_group(scores: torch.Tensor, group_size: int, rows: torch.Tensor) -> torch.Tensor:
    """Mask other groups' columns for the flagged ``rows`` (datasets without in-batch negatives)."""
    if not bool(rows.any()):
        return scores
    b = scores.shape[0]
    col_query = torch.arange(scores.shape[1], device=scores.device) // group_size
    other = col_query[None, :] != torch.arange(b, device=scores.device)[:, None]
    return scores.masked_fill(other & rows.bool()[:, None], torch.finfo(scores.dtype).min)


def info_nce(scores: torch.Tensor, group_size: int) -> torch.Tensor:
    """Cross-entropy of each query's positive (column ``i*G``) against all columns (mean over queries)."""
    targets = torch.arange(scores.shape[0], device=scores.device) * group_size
    return F.cross_entropy(scores, targets)


def kl_div_loss(student_group_scores: torch.Tensor, teacher_targets: torch.Tensor) -> torch.Tensor:
    """Soft cross-entropy ``-mean(sum(teacher * log_softmax(student)))`` over ``(B, G)`` group scores."""
    return -torch.mean(torch.sum(F.log_softmax(student_group_scores, dim=-1) * teacher_targets, dim=-1))


def m3_kd_loss(scores: torch.Tensor, teacher_targets: torch.Tensor, group_size: int) -> torch.Tensor:
    """BGE-M3's distillation: ``sum_i mean(teacher[:, i] * CE(scores, i-th passage))``.

    After passage ``i`` is targeted its column is masked, so it never acts as a negative for the
    following passages of the same group.
    """
    labels = torch.arange(scores.shape[0], device=scores.device) * group_size
    masked = torch.zeros_like(scores, dtype=torch.bool)
    loss = scores.new_zeros(())
    for i in range(group_size):
        target = labels + i
        ce = F.cross_entropy(scores.masked_fill(masked, torch.finfo(scores.dtype).min), target, reduction="none")
        loss = loss + torch.mean(teacher_targets[:, i] * ce)
        masked = masked.scatter(1, target[:, None], True)
    return loss


def teacher_targets_from(teacher_scores: torch.Tensor, batch: int) -> torch.Tensor:
    """``softmax`` of the teacher's group scores (no temperature, as the reference)."""
    scores = teacher_scores.to(torch.promote_types(teacher_scores.dtype, torch.float32))
    return F.softmax(scores.reshape(batch, -1), dim=-1)


def contrastive_loss(
    q: torch.Tensor,
    p: torch.Tensor,
    *,
    temperature: float = 0.02,
    teacher_scores: torch.Tensor | None = None,
    kd_loss_type: KDLossType = "kl_div",
    no_in_batch_neg: torch.Tensor | None = None,
) -> torch.Tensor:
    """InfoNCE with in-batch negatives, optionally with knowledge distillation from teacher scores.

    Args:
        q: query embeddings ``(B, D)``.
        p: passage embeddings ``(B*G, D)``, each query's positive first in its group.
        temperature: scores are divided by it.
        teacher_scores: ``(B, G)`` (or ``B*G``) teacher scores in group order; ``None`` for hard labels.
        kd_loss_type: ``kl_div`` (soft CE on the group plus the hard-label loss) or ``m3_kd_loss``.
        no_in_batch_neg: ``(B,)`` bool; flagged queries only see their own group.

    Raises:
        ValueError: bad shapes or an unknown ``kd_loss_type``.
    """
    group = group_size_of(q, p)
    return score_loss(
        (q @ p.T) / temperature,
        group,
        teacher_scores=teacher_scores,
        kd_loss_type=kd_loss_type,
        no_in_batch_neg=no_in_batch_neg,
    )


def score_loss(
    scores: torch.Tensor,
    group: int,
    *,
    teacher_scores: torch.Tensor | None = None,
    kd_loss_type: KDLossType = "kl_div",
    no_in_batch_neg: torch.Tensor | None = None,
) -> torch.Tensor:
    """:func:`contrastive_loss` on a ready ``(B, B*G)`` score matrix (already divided by the temperature).

    Used by the dense loss and by BGE-M3's sparse, ColBERT and ensemble losses (``train.m3_losses``).

    Raises:
        ValueError: teacher scores of the wrong group size or an unknown ``kd_loss_type``.
    """
    if no_in_batch_neg is not None:
        scores = restrict_to_own_group(scores, group, no_in_batch_neg)
    if teacher_scores is None:
        return info_nce(scores, group)
    targets = teacher_targets_from(teacher_scores, scores.shape[0]).to(scores.dtype)
    if targets.shape[1] != group:
        raise ValueError(f"teacher scores have {targets.shape[1]} per query, expected the group size {group}")
    if kd_loss_type == "kl_div":
        return kl_div_loss(own_group(scores, group), targets) + info_nce(scores, group)
    if kd_loss_type == "m3_kd_loss":
        return m3_kd_loss(scores, targets, group)
    raise ValueError(f"unknown kd_loss_type {kd_loss_type!r}; valid: kl_div, m3_kd_loss")


def embedder_loss(
    q: torch.Tensor,
    p: torch.Tensor,
    *,
    temperature: float = 0.02,
    teacher_scores: torch.Tensor | None = None,
    kd_loss_type: KDLossType = "kl_div",
    no_in_batch_neg: torch.Tensor | None = None,
    cross_device: bool = False,
    mrl_dims: Sequence[int] | None = None,
    normalize: bool = True,
) -> torch.Tensor:
    """The training loss of a dense embedder: :func:`contrastive_loss`, cross-device and Matryoshka aware.

    Args:
        cross_device: gather ``q``, ``p``, teacher scores and flags from all processes first
            (every process must pass the same shapes).
        mrl_dims: average the loss over these prefix dimensions (each prefix re-normalized when
            ``normalize``); ``None``/empty uses the full vectors.
        normalize: whether the embeddings are L2-normalized (decides Matryoshka re-normalization).
    """
    if cross_device and world_size() > 1:
        q, p = gather_with_grad(q), gather_with_grad(p)
        if teacher_scores is not None:
            teacher_scores = gather_no_grad(teacher_scores.reshape(-1, p.shape[0] // q.shape[0]))
        if no_in_batch_neg is not None:
            no_in_batch_neg = gather_no_grad(no_in_batch_neg.to(torch.int64)).bool()
    kwargs = dict(
        temperature=temperature,
        teacher_scores=teacher_scores,
        kd_loss_type=kd_loss_type,
        no_in_batch_neg=no_in_batch_neg,
    )
    if not mrl_dims:
        return contrastive_loss(q, p, **kwargs)
    losses = []
    for i, dim in enumerate(mrl_dims):
        if dim < 1 or dim > q.shape[1]:
            raise ValueError(f"mrl_dims[{i}] = {dim} is outside 1..{q.shape[1]}")
        qd, pd = q[:, :dim], p[:, :dim]
        if normalize:
            qd, pd = F.normalize(qd, dim=-1), F.normalize(pd, dim=-1)
        losses.append(contrastive_loss(qd, pd, **kwargs))
    return torch.stack(losses).mean()
