"""Reranker losses against by-hand formulas (WAVE2_REFERENCE.md Appendix A) and the partial-batch reshape."""

from __future__ import annotations

import math

import pytest
import torch

from flagembed.train.reranker_losses import (
    group_ce_loss,
    group_scores,
    layerwise_loss,
    reranker_loss,
    soft_ce_loss,
)


def _log_softmax_rows(z: list[list[float]]) -> list[list[float]]:
    out = []
    for row in z:
        m = max(row)
        lse = m + math.log(sum(math.exp(v - m) for v in row))
        out.append([v - lse for v in row])
    return out


def _softmax_rows(z: list[list[float]]) -> list[list[float]]:
    return [[math.exp(v) for v in row] for row in _log_softmax_rows(z)]


def _ce_by_hand(z: list[list[float]]) -> float:
    return -sum(row[0] for row in _log_softmax_rows(z)) / len(z)


def _soft_ce_by_hand(z: list[list[float]], teacher: list[list[float]]) -> float:
    t, ls = _softmax_rows(teacher), _log_softmax_rows(z)
    return -sum(sum(a * b for a, b in zip(tr, lr)) for tr, lr in zip(t, ls)) / len(z)


def test_group_ce_and_kd_equal_by_hand() -> None:
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(6, generator=g) * 3  # B=2, G=3
    teacher = torch.randn(2, 3, generator=g)
    z = scores.view(2, 3).tolist()
    assert group_ce_loss(scores, 3).item() == pytest.approx(_ce_by_hand(z), abs=1e-6)
    assert soft_ce_loss(scores, teacher, 3).item() == pytest.approx(_soft_ce_by_hand(z, teacher.tolist()), abs=1e-6)
    with_kd = reranker_loss(scores, 3, teacher).item()
    assert with_kd == pytest.approx(_ce_by_hand(z) + _soft_ce_by_hand(z, teacher.tolist()), abs=1e-6)
    assert reranker_loss(scores, 3).item() == pytest.approx(_ce_by_hand(z), abs=1e-6)


def test_layerwise_loss_by_hand_and_deepest_layer_is_detached() -> None:
    g = torch.Generator().manual_seed(1)
    layers = [torch.randn(6, generator=g, requires_grad=True) for _ in range(3)]
    zs = [t.detach().view(2, 3).tolist() for t in layers]
    expected = sum(_ce_by_hand(z) for z in zs) + sum(_soft_ce_by_hand(z, zs[-1]) for z in zs[:-1])
    loss = layerwise_loss(layers, 3)
    assert loss.item() == pytest.approx(expected, abs=1e-5)
    loss.backward()
    deepest_ce = torch.autograd.grad(group_ce_loss(layers[-1], 3), layers[-1])[0]
    assert torch.allclose(layers[-1].grad, deepest_ce, atol=1e-6)  # no distillation gradient into the teacher layer
    teacher = torch.randn(2, 3, generator=g)
    with_teacher = layerwise_loss([t.detach() for t in layers], 3, teacher).item()
    by_hand = sum(_ce_by_hand(z) + _soft_ce_by_hand(z, teacher.tolist()) for z in zs)
    assert with_teacher == pytest.approx(by_hand, abs=1e-5)


def test_partial_final_batch_reshapes_by_actual_size() -> None:
    # per_device_train_batch_size=2 but the last batch holds 1 query: reshaped to (1, G), not (2, G)
    scores = torch.tensor([2.0, -1.0, 0.5])
    assert group_scores(scores, 3).shape == (1, 3)
    assert group_ce_loss(scores, 3).item() == pytest.approx(_ce_by_hand([[2.0, -1.0, 0.5]]), abs=1e-6)
    with pytest.raises(ValueError, match="train_group_size=3"):
        group_ce_loss(torch.zeros(4), 3)
