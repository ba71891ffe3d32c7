"""STS: correlations equal scipy on explicit cosines; the published SICK-R number for all-MiniLM-L6-v2."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr

from flagembed.evaluate import PairData, evaluate_sts, load_pairs
from flagembed.evaluate.sts import sts_scores


def test_sts_scores_against_scipy():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(50, 8)), rng.normal(size=(50, 8))
    gold = rng.uniform(0, 5, size=50)
    cos = [float(x @ y / np.linalg.norm(x) / np.linalg.norm(y)) for x, y in zip(a, b)]
    out = sts_scores(a, b, gold)
    assert out["cosine_spearman"] == pytest.approx(spearmanr(gold, cos)[0])
    assert out["cosine_pearson"] == pytest.approx(pearsonr(gold, cos)[0])
    manhattan = [-np.abs(x - y).sum() for x, y in zip(a, b)]
    assert out["manhattan_spearman"] == pytest.approx(spearmanr(gold, manhattan)[0])
    with pytest.raises(ValueError, match="at least 2"):
        sts_scores(a[:1], b[:1], gold[:1])


def test_evaluate_sts_with_tiny_model(tiny_embedder):
    s1 = ["a cat sits", "dogs run fast", "rain today", "bread and butter"]
    s2 = ["a cat is sitting", "the market fell", "it rains", "butter on bread"]
    gold = np.array([4.5, 0.5, 4.0, 4.2])
    res = evaluate_sts(tiny_embedder, PairData("toy", s1, s2, gold))
    a, b = tiny_embedder.encode(s1), tiny_embedder.encode(s2)
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert res.metrics["cosine_spearman"] == pytest.approx(spearmanr(gold, cos)[0], abs=1e-6)
    assert res.main_score == "cosine_spearman" and res.task == "sts"
    assert res.split == "test"
    assert evaluate_sts(tiny_embedder, PairData("toy", s1, s2, gold, "train+valid")).split == "train+valid"


@pytest.mark.slow
def test_sick_r_published_score_all_minilm(minilm_path, shared_data, monkeypatch):
    """MTEB results repository (mteb 1.12): all-MiniLM-L6-v2 SICK-R cos Spearman = 77.58 on all 9,927 pairs.

    With the evaluation's default settings on a CPU with AMX (mocked): evaluation keeps fp32 there.
    """
    import torch

    from flagembed.engine import hardware
    from flagembed.evaluate.jobs import load_embedder

    monkeypatch.delenv("FLAGEMBED_CPU_BF16", raising=False)
    amx = hardware.CpuFeatures("fake AMX CPU", frozenset({"amx_bf16", "amx_tile", "avx512_bf16"}), "AVX512", 2)
    monkeypatch.setattr(hardware, "cpu_features", lambda: amx)
    data = load_pairs(shared_data / "sick-r", name="SICK-R", split="all")
    assert len(data) == 9927
    embedder = load_embedder(str(minilm_path), device="cpu", show_progress=False)
    assert embedder.dtype == torch.float32
    res = evaluate_sts(embedder, data)
    assert res.metrics["cosine_spearman"] * 100 == pytest.approx(77.58, abs=0.05)
