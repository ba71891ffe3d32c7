"""FlagEmbedding reranker aliases: arguments, defaults and return shapes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tiny_models
import tiny_rerankers

from flagembed import (
    FlagAutoReranker,
    FlagLLMReranker,
    FlagReranker,
    LayerWiseFlagLLMReranker,
    LightWeightFlagLLMReranker,
    LLMReranker,
    Reranker,
)

PAIRS = [("what is the cell", "the cell is a small protein"), ("hiv drug", "clinical therapy for hiv patients")]


@pytest.fixture(scope="module")
def ce(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_models.build_xlmr(tmp_path_factory.mktemp("compat") / "bge-reranker-v2-m3", seed=5, classifier=True)


@pytest.fixture(scope="module")
def lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("compat") / "bge-reranker-v2-gemma"
    return tiny_rerankers.build_decoder_lm(folder, "gemma2", layers=3, heads=True)


def test_flag_reranker(ce: Path) -> None:
    fr = FlagReranker(str(ce), use_fp16=True, devices="cpu", query_instruction_for_rerank="q: ")
    got = fr.compute_score(PAIRS, normalize=True)
    want = Reranker(ce, device="cpu", query_instruction="q: ").compute_score(PAIRS, normalize=True)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    one = fr.compute_score(PAIRS[0], max_length=64)
    assert isinstance(one, list) and len(one) == 1


def test_flag_llm_reranker(lm: Path) -> None:
    fr = FlagLLMReranker(str(lm), use_bf16=True, devices=["cpu"])
    got = fr.compute_score(PAIRS, use_dataloader=False)
    np.testing.assert_allclose(got, LLMReranker(lm, device="cpu").compute_score(PAIRS), rtol=1e-6)
    assert len(fr.compute_score(PAIRS[1])) == 1


def test_layerwise_and_lightweight_aliases(lm: Path) -> None:
    lw = LayerWiseFlagLLMReranker(str(lm), devices="cpu", cutoff_layers=[2, 3])
    scores = lw.compute_score(PAIRS)
    assert len(scores) == 2 and all(len(s) == 2 for s in scores)
    assert len(lw.compute_score(PAIRS, cutoff_layers=[3])) == 2
    lt = LightWeightFlagLLMReranker(str(lm), devices="cpu", compress_ratio=2, compress_layers=[1])
    a = lt.compute_score(PAIRS, cutoff_layers=[3], compress_layer=[1], compress_ratio=2)
    b = lt.compute_score(PAIRS, cutoff_layers=[3])
    np.testing.assert_allclose(a, b, rtol=1e-6)


def test_auto_reranker(ce: Path, lm: Path) -> None:
    assert isinstance(FlagAutoReranker.from_finetuned(str(ce), devices="cpu"), FlagReranker)  # by folder name
    assert isinstance(FlagAutoReranker.from_finetuned(str(lm), devices="cpu"), FlagLLMReranker)
    lw = FlagAutoReranker.from_finetuned(str(lm), model_class="decoder-only-layerwise", devices="cpu")
    assert isinstance(lw, LayerWiseFlagLLMReranker)
    with pytest.raises(ValueError, match="unknown model_class"):
        FlagAutoReranker.from_finetuned(str(ce), model_class="nope")
    with pytest.raises(ValueError, match="not a known reranker"):
        FlagAutoReranker.from_finetuned("/no/such/model-xyz")
    with pytest.raises(OSError):
        FlagAutoReranker()
