"""Embedder argument limits and quiet loading (no silent ignores, one warning per cause, no load bars)."""

from __future__ import annotations

import logging
import warnings

import pytest

from flagembed import Embedder, FlagModel


def test_truncate_dim_larger_than_the_model_is_refused(tiny_bert):
    with pytest.raises(ValueError, match="truncate_dim must be between 1 and the model's dimension 32, got 33"):
        Embedder(tiny_bert, pooling="cls", truncate_dim=33)
    emb = Embedder(tiny_bert, pooling="cls")
    with pytest.raises(ValueError, match="dimension 32, got 64"):
        emb.encode(["a"], truncate_dim=64)
    assert emb.encode(["a"], truncate_dim=8).shape == (1, 8)


def test_max_length_zero_is_refused_not_ignored(tiny_bert):
    emb = Embedder(tiny_bert, pooling="cls")
    with pytest.raises(ValueError, match="max_length must be >= 1, got 0"):
        emb.encode(["a b c"], max_length=0)
    with pytest.raises(ValueError, match="max_length must be >= 1, got 0"):
        Embedder(tiny_bert, pooling="cls", query_max_length=0)


def test_the_max_length_warning_is_given_once(tiny_bert, caplog):
    with caplog.at_level(logging.WARNING, logger="flagembed"):
        emb = Embedder(tiny_bert, pooling="cls", max_length=10**5)
        emb.encode(["a"], max_length=10**5)
        emb.encode_queries(["b"])
    hits = [r for r in caplog.records if "exceeds the model's limit" in r.getMessage()]
    assert len(hits) == 1


def test_flagmodel_default_fp16_on_cpu_is_silent(tiny_bert):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = FlagModel(str(tiny_bert), devices="cpu")
    assert not [w for w in caught if "half precision" in str(w.message)]
    assert str(next(model.encoder.parameters()).dtype) == "torch.float32"


def test_loading_shows_no_weight_loading_bar(minilm_path, capfd):
    Embedder(minilm_path)
    err = capfd.readouterr().err
    assert "Loading weights" not in err and "it/s" not in err


def test_rerankers_load_without_a_weight_loading_bar(tmp_path, capfd):
    import tiny_models
    import tiny_rerankers

    from flagembed import LLMReranker, Reranker

    Reranker(tiny_models.build_bert(tmp_path / "ce", classifier=True))
    LLMReranker(tiny_rerankers.build_decoder_lm(tmp_path / "lm", "qwen2", layers=2))
    err = capfd.readouterr().err
    assert "Loading weights" not in err
