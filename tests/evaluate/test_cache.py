"""Embedding cache: reruns hit it; pooling or instruction changes miss it."""

from __future__ import annotations

import pytest

from flagembed.evaluate import config_hash, evaluate_retrieval, load_retrieval, model_config
from flagembed.inference import Embedder


class Counting:
    """Wraps an embedder and counts encode calls."""

    def __init__(self, inner):
        self.inner, self.calls = inner, 0
        self.settings, self.dtype = inner.settings, inner.dtype

    def encode_queries(self, texts, **kw):
        self.calls += 1
        return self.inner.encode_queries(texts, **kw)

    def encode_corpus(self, texts, **kw):
        self.calls += 1
        return self.inner.encode_corpus(texts, **kw)


def test_rerun_hits_cache_and_config_changes_miss(tiny_bert, beir_dir, tmp_path):
    data = load_retrieval(beir_dir)
    cache = tmp_path / "cache"
    first = Counting(Embedder(str(tiny_bert), device="cpu", pooling="cls"))
    (a,) = evaluate_retrieval(first, data, cache_dir=cache, k_values=(1, 3))
    assert first.calls == 2
    again = Counting(Embedder(str(tiny_bert), device="cpu", pooling="cls"))
    (b,) = evaluate_retrieval(again, data, cache_dir=cache, k_values=(1, 3))
    assert again.calls == 0 and b.stats["cache_hits"] == 2
    assert b.metrics == a.metrics
    for kwargs in ({"pooling": "mean"}, {"pooling": "cls", "query_instruction": "Represent: "}):
        other = Counting(Embedder(str(tiny_bert), device="cpu", **kwargs))
        (c,) = evaluate_retrieval(other, data, cache_dir=cache, k_values=(1, 3))
        assert other.calls >= 1, kwargs
        assert c.config_hash != a.config_hash
    assert len(list(cache.glob("*.npy"))) == 2 + 2 + 1  # the instruction change only re-embeds queries


def test_a_model_typed_as_relative_or_absolute_path_shares_the_cache(tiny_bert, beir_dir, tmp_path, monkeypatch):
    data = load_retrieval(beir_dir)
    cache = tmp_path / "cache"
    absolute = Counting(Embedder(str(tiny_bert), device="cpu"))
    (a,) = evaluate_retrieval(absolute, data, cache_dir=cache, k_values=(1, 3))
    monkeypatch.chdir(tiny_bert.parent)
    relative = Counting(Embedder(tiny_bert.name, device="cpu"))
    assert model_config(relative)["name"] != model_config(absolute)["name"]  # typed differently
    (b,) = evaluate_retrieval(relative, data, cache_dir=cache, k_values=(1, 3))
    assert relative.calls == 0 and b.stats["cache_hits"] == 2 and b.metrics == a.metrics


def test_config_hash_is_order_independent_and_sensitive():
    assert config_hash({"a": 1, "b": 2}) == config_hash({"b": 2, "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})


def test_model_config_records_settings(tiny_embedder):
    cfg = model_config(tiny_embedder)
    for key in ("name", "pooling", "normalize", "query_instruction", "query_max_length", "dtype"):
        assert key in cfg
    assert cfg["dtype"] == "float32"


def test_generic_object_config():
    class Plain:
        name = "plain"

    assert model_config(Plain())["name"] == "plain"


def test_cache_writes_meta(tmp_path):
    import numpy as np

    from flagembed.evaluate import EmbeddingCache

    c = EmbeddingCache(tmp_path)
    out = c.get_or_compute({"x": 1}, lambda: np.ones((2, 3), dtype=np.float32))
    again = c.get_or_compute({"x": 1}, lambda: pytest.fail("should hit the cache"))
    assert (out == again).all() and c.hits == 1 and c.misses == 1
    assert len(list(tmp_path.glob("*.json"))) == 1
    assert not list(tmp_path.glob(".*.tmp"))
