"""BGE-M3 unified fine-tuning losses: dense, sparse and ColBERT InfoNCE, their ensemble, self-distillation.

Functions of representations and score matrices (WAVE2_REFERENCE.md §3.a.3-4). Layout as in
``train.losses``: ``B`` queries, ``B*G`` passages with query ``b``'s group at rows ``b*G .. b*G+G-1``
(positive first). Every score matrix is ``(B, B*G)`` and already divided by the temperature.

- sparse: lexical vectors ``v[id] = max_t relu(w_t)`` over the positions holding ``id`` (special ids
  zeroed), ``s = <v_q, v_p>``; the same vector inference builds (``models.heads.sparse_vocab``).
- ColBERT: ``models.heads.maxsim`` (CLS excluded, padding masked, divided by the query's vector count),
  the one late-interaction function inference and the index use.
- ensemble: ``s_d + 0.3 s_s + s_c``; total ``(L_d + L_e + 0.1 L_s + L_c) / 4``; with self-distillation
  ``(that + (KD(p, s_d) + 0.1 KD(p, s_s) + KD(p, s_c)) / 3) / 2`` with ``p = softmax(detach(s_e))``.
- queries flagged ``no_in_batch_neg`` see only their own group in every term, ensemble and teacher
  included (the reference's path for that mode is degenerate, FlagEmbedding #1410).
- optional FLOPS regulariser (Paria et al. 2020, as sentence-transformers' SPLADE losses) on the lexical
  vectors, against the sparse collapse of FlagEmbedding #982; off by default.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from flagembed.models import maxsim
from flagembed.train.losses import KDLossType, kl_div_loss, restrict_to_own_group, score_loss

ENSEMBLE_SPARSE_WEIGHT = 0.3
SPARSE_LOSS_WEIGHT = 0.1


def lexical_vectors(
    weights: torch.Tensor, input_ids: torch.Tensor, mask: torch.Tensor, vocab_size: int, unused_ids: Iterable[int]
) -> torch.Tensor:
    """Differentiable vocabulary-size sparse vectors ``(B, V)``: max token weight per id, special ids zeroed.

    Args:
        weights: ``(B, L)`` token weights ``relu(sparse_linear(h))``.
        input_ids, mask: ``(B, L)`` token ids and attention mask (padding contributes nothing).
        vocab_size: number of columns (>= every id).
        unused_ids: ids whose weight is always 0 (CLS, EOS, PAD, UNK).
    """
    w = weights * mask.to(weights.dtype)
    unused = sorted(set(unused_ids))
    if unused:
        drop = torch.isin(input_ids, torch.tensor(unused, dtype=input_ids.dtype, device=input_ids.device))
        w = w.masked_fill(drop, 0.0)
    out = torch.zeros(input_ids.shape[0], vocab_size, dtype=w.dtype, device=w.device)
    return out.scatter_reduce(1, input_ids.long(), w, reduce="amax", include_self=True)


def dense_scores(q: torch.Tensor, p: torch.Tensor, temperature: float) -> torch.Tensor:
    """``q @ p.T / temperature``: ``(B, B*G)``."""
    return (q @ p.T) / temperature


def sparse_scores(q_lex: torch.Tensor, p_lex: torch.Tensor, temperature: float) -> torch.Tensor:
    """Lexical matching ``<v_q, v_p> / temperature`` of lexical vectors ``(B, V)`` and ``(B*G, V)``."""
    return (q_lex @ p_lex.T) / temperature


def colbert_scores(
    q_vecs: torch.Tensor, q_len: torch.Tensor, p_vecs: torch.Tensor, p_len: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Late-interaction scores ``sum_i max_j <c_i, c_j> / n_q / temperature`` of every query with every passage."""
    return maxsim(q_vecs, q_len, p_vecs, p_len) / temperature


def ensemble_scores(dense: torch.Tensor, sparse: torch.Tensor, colbert: torch.Tensor) -> torch.Tensor:
    """The M3 teacher score ``s_d + 0.3 s_s + s_c``."""
    return dense + ENSEMBLE_SPARSE_WEIGHT * sparse + colbert


def flops_regularizer(lexical: torch.Tensor) -> torch.Tensor:
    """FLOPS: ``sum_v (mean_b |v_b[v]|)^2`` of a batch of lexical vectors (pushes rarely useful ids to 0)."""
    return torch.sum(torch.mean(lexical.abs(), dim=0) ** 2)


@dataclass
class M3LossParts:
    """Every term of one unified loss (detached floats are for logging)."""

    loss: torch.Tensor
    dense: torch.Tensor
    sparse: torch.Tensor
    colbert: torch.Tensor
    ensemble: torch.Tensor
    self_distill: torch.Tensor | None = None
    flops: torch.Tensor | None = None

    def as_floats(self) -> dict[str, float]:
        """Named float values of the terms that were computed."""
        names = ("loss", "dense", "sparse", "colbert", "ensemble", "self_distill", "flops")
        return {n: float(getattr(self, n).detach()) for n in names if getattr(self, n) is not None}


def self_distill_loss(
    dense: torch.Tensor, sparse: torch.Tensor, colbert: torch.Tensor, ensemble: torch.Tensor
) -> torch.Tensor:
    """``(KD(p, s_d) + 0.1 KD(p, s_s) + KD(p, s_c)) / 3`` with ``p = softmax(detach(s_e))`` over each row."""
    teacher = F.softmax(ensemble.detach(), dim=-1)
    terms = kl_div_loss(dense, teacher) + SPARSE_LOSS_WEIGHT * kl_div_loss(sparse, teacher)
    terms = terms + kl_div_loss(colbert, teacher)
    return terms / 3


def unified_loss(
    dense: torch.Tensor,
    sparse: torch.Tensor,
    colbert: torch.Tensor,
    group: int,
    *,
    dense_loss: torch.Tensor | None = None,
    teacher_scores: torch.Tensor | None = None,
    kd_loss_type: KDLossType = "m3_kd_loss",
    no_in_batch_neg: torch.Tensor | None = None,
    self_distill: bool = False,
    flops: torch.Tensor | None = None,
) -> M3LossParts:
    """BGE-M3's training loss from the three local ``(B, B*G)`` score matrices.

    Args:
        dense, sparse, colbert: score matrices of this process's batch (divided by the temperature).
        group: passages per query ``G``.
        dense_loss: the dense term when computed elsewhere (cross-device negatives); else from ``dense``.
        teacher_scores: ``(B, G)`` external teacher scores: every term uses ``kd_loss_type`` with them.
        no_in_batch_neg: ``(B,)`` bool: flagged queries see only their own group in every term.
        self_distill: add the self-distillation terms (the caller decides the start step).
        flops: an already weighted sparsity regulariser added to the total (``None``: off).
    """
    kwargs = dict(teacher_scores=teacher_scores, kd_loss_type=kd_loss_type, no_in_batch_neg=no_in_batch_neg)
    ens = ensemble_scores(dense, sparse, colbert)  # from raw scores: masked columns must not be summed
    l_dense = dense_loss if dense_loss is not None else score_loss(dense, group, **kwargs)
    l_sparse = score_loss(sparse, group, **kwargs)
    l_colbert = score_loss(colbert, group, **kwargs)
    l_ens = score_loss(ens, group, **kwargs)
    loss = (l_dense + l_ens + SPARSE_LOSS_WEIGHT * l_sparse + l_colbert) / 4
    sd = None
    if self_distill:
        if no_in_batch_neg is not None:
            dense, sparse, colbert, ens = (
                restrict_to_own_group(s, group, no_in_batch_neg) for s in (dense, sparse, colbert, ens)
            )
        sd = self_distill_loss(dense, sparse, colbert, ens)
        loss = (loss + sd) / 2
    if flops is not None:
        loss = loss + flops
    return M3LossParts(loss, l_dense, l_sparse, l_colbert, l_ens, sd, flops)
