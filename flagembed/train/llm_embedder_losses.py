"""LLM-Embedder's losses (research/llm_embedder ``_compute_loss``; WAVE2_REFERENCE §2.5, Appendix A).

Layout as :mod:`flagembed.train.losses`: ``q`` ``(B, D)``, ``p`` ``(B*G, D)`` with query ``b``'s group at
rows ``b*G .. b*G+G-1`` (its positive first); scores are ``q @ p.T / temperature`` (τ_c, 0.01 there).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from flagembed.train.losses import group_size_of, info_nce, m3_kd_loss, own_group


def kl_distill_loss(
    student_group_scores: torch.Tensor,
    teacher_scores: torch.Tensor,
    teacher_temperature: float = 1.0,
    student_temperature: float = 1.0,
) -> torch.Tensor:
    """``KL(softmax(teacher / τ_t) ‖ softmax(student / τ_s))`` per query, averaged over queries (``batchmean``)."""
    if teacher_temperature <= 0 or student_temperature <= 0:
        raise ValueError(f"temperatures must be > 0, got teacher {teacher_temperature}, student {student_temperature}")
    log_student = F.log_softmax(student_group_scores / student_temperature, dim=-1)
    teacher = F.softmax(teacher_scores.to(log_student.dtype) / teacher_temperature, dim=-1)
    return F.kl_div(log_student, teacher, reduction="batchmean")


def stable_distill_loss(scores: torch.Tensor, teacher_scores: torch.Tensor, group_size: int) -> torch.Tensor:
    """The teacher-weighted sequence of contrastive losses: key ``i`` of each group against all in-batch keys
    not yet targeted, weighted by ``softmax(teacher)[b, i]`` (no temperature), summed over ``i``."""
    targets = F.softmax(teacher_scores.to(scores.dtype).reshape(scores.shape[0], -1), dim=-1)
    if targets.shape[1] != group_size:
        raise ValueError(f"teacher scores have {targets.shape[1]} per query, expected the group size {group_size}")
    return m3_kd_loss(scores, targets, group_size)


def llm_embedder_loss(
    q: torch.Tensor,
    p: torch.Tensor,
    *,
    temperature: float = 0.01,
    teacher_scores: torch.Tensor | None = None,
    contrastive_weight: float = 0.2,
    distill_weight: float = 1.0,
    teacher_temperature: float = 1.0,
    student_temperature: float = 1.0,
    stable_distill: bool = False,
) -> torch.Tensor:
    """``contrastive_weight · InfoNCE + distill_weight · distillation``; a weight of 0 (or no teacher scores)
    drops that term, as in the reference.

    Raises:
        ValueError: neither term is active (no contrastive weight and no teacher scores / distill weight).
    """
    group = group_size_of(q, p)
    scores = (q @ p.T) / temperature
    use_distill = teacher_scores is not None and distill_weight > 0
    use_contrast = contrastive_weight > 0
    if not (use_distill or use_contrast):
        raise ValueError(
            "no loss: contrastive_weight is 0 and there is no distillation (teacher scores missing or distill_weight 0)"
        )
    losses = []
    if use_contrast:
        losses.append(info_nce(scores, group) * (contrastive_weight if use_distill else 1.0))
    if use_distill:
        teacher = teacher_scores.reshape(len(q), group)  # type: ignore[union-attr]
        if stable_distill:
            dis = stable_distill_loss(scores, teacher, group)
        else:
            dis = kl_distill_loss(own_group(scores, group), teacher, teacher_temperature, student_temperature)
        losses.append(dis * (distill_weight if use_contrast else 1.0))
    return torch.stack(losses).sum()
