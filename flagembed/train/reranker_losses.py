"""Reranker losses: functions of pair scores (WAVE2_REFERENCE.md §3.b, Appendix A).

Scores arrive flat, ``(N,)`` with ``N = B * G`` and each query's group contiguous (positive first). They are
reshaped by the *actual* number of pairs, ``(N // G, G)``: a final partial batch (fewer queries than
``per_device_train_batch_size``) is trained like any other, where the reference's reshape by the configured
batch size fails unless ``dataloader_drop_last`` is set.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from flagembed.train.losses import kl_div_loss


def group_scores(scores: torch.Tensor, group_size: int) -> torch.Tensor:
    """``(N,)`` pair scores as ``(N // G, G)`` query groups.

    Raises:
        ValueError: ``N`` is not a positive multiple of ``group_size``.
    """
    flat = scores.reshape(-1)
    if group_size < 1 or flat.numel() == 0 or flat.numel() % group_size:
        raise ValueError(f"{flat.numel()} pair scores do not split into groups of train_group_size={group_size}")
    return flat.view(-1, group_size)


def group_ce_loss(scores: torch.Tensor, group_size: int) -> torch.Tensor:
    """Listwise softmax cross-entropy with the positive (column 0) as target, mean over queries."""
    groups = group_scores(scores, group_size)
    return F.cross_entropy(groups.float(), torch.zeros(len(groups), dtype=torch.long, device=groups.device))


def soft_ce_loss(scores: torch.Tensor, teacher_scores: torch.Tensor, group_size: int) -> torch.Tensor:
    """Distillation as soft cross-entropy: ``-mean_b sum_g softmax(teacher)_bg * log_softmax(scores)_bg``."""
    groups = group_scores(scores, group_size).float()
    teacher = group_scores(teacher_scores.to(groups.device), group_size).float()
    if teacher.shape != groups.shape:
        raise ValueError(f"teacher scores {tuple(teacher.shape)} do not match the score groups {tuple(groups.shape)}")
    return kl_div_loss(groups, F.softmax(teacher, dim=-1))


def reranker_loss(
    scores: torch.Tensor, group_size: int, teacher_scores: torch.Tensor | None = None
) -> torch.Tensor:
    """Group CE, plus the soft-CE distillation term when teacher scores are given (the reference's sum)."""
    loss = group_ce_loss(scores, group_size)
    if teacher_scores is not None:
        loss = loss + soft_ce_loss(scores, teacher_scores, group_size)
    return loss


def layerwise_loss(
    layer_scores: Sequence[torch.Tensor], group_size: int, teacher_scores: torch.Tensor | None = None
) -> torch.Tensor:
    """Layerwise reranker loss over every scored layer (shallow to deep).

    ``sum_l CE_l`` plus, with teacher scores, ``sum_l softCE(teacher, z_l)``; without them, self-distillation
    from the deepest layer ``sum_{l < L} softCE(detach(z_L), z_l)``.

    Raises:
        ValueError: no layer scores.
    """
    if not layer_scores:
        raise ValueError("layerwise_loss needs the scores of at least one layer")
    loss = sum(group_ce_loss(z, group_size) for z in layer_scores)
    if teacher_scores is not None:
        return loss + sum(soft_ce_loss(z, teacher_scores, group_size) for z in layer_scores)
    deepest = layer_scores[-1].detach()
    return loss + sum((soft_ce_loss(z, deepest, group_size) for z in layer_scores[:-1]), deepest.new_zeros(()).float())
