"""Several CPU "devices" for M3Embedder and the rerankers: same results as one device, errors and crashes surface."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tiny_m3
import tiny_rerankers
from pool_workers import crash_chunk, fail_chunk

from flagembed.engine.pool import WorkerPoolError
from flagembed.inference import LayerwiseReranker, LLMReranker, M3Embedder, Reranker

TEXTS = [f"text number {i} about cells, genes and {'very ' * (i % 7)}long proteins" for i in range(13)]
PAIRS = [("what is the cell", t) for t in TEXTS[:9]]


@pytest.fixture(scope="module")
def m3_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_m3.build_m3(tmp_path_factory.mktemp("par") / "m3")


@pytest.mark.slow  # spawns two worker processes that load the model
def test_m3_pool_keeps_order_and_equals_one_device(m3_path: Path) -> None:
    one = M3Embedder(m3_path, device="cpu", batch_size=4).encode_multi(TEXTS, dense=True, sparse=True, colbert=True)
    with M3Embedder(m3_path, device=["cpu", "cpu"], batch_size=4) as m3:
        two = m3.encode_multi(TEXTS, dense=True, sparse=True, colbert=True)
        np.testing.assert_allclose(two.dense, one.dense, atol=1e-6)
        np.testing.assert_allclose(two.sparse.toarray(), one.sparse.toarray(), atol=1e-6)
        assert [c.shape for c in two.colbert] == [c.shape for c in one.colbert]
        for a, b in zip(two.colbert, one.colbert):
            np.testing.assert_allclose(a, b, atol=1e-6)
        ref = m3.encode(TEXTS[:3], return_sparse=True)  # the reference dict API goes through the pool too
        np.testing.assert_allclose(ref["dense_vecs"], one.dense[:3], atol=1e-6)
        with pytest.raises(ValueError, match="bad chunk of 7 on cpu"):
            m3._map_workers(fail_chunk, TEXTS)
        with pytest.raises(WorkerPoolError, match="died"):
            m3._map_workers(crash_chunk, TEXTS)
        assert m3._pool is None  # the dead pool is dropped: the next call starts fresh workers


@pytest.mark.slow
def test_cross_encoder_pool_scores_in_order(tmp_path: Path) -> None:
    import tiny_models

    path = tiny_models.build_bert(tmp_path / "ce", seed=3, classifier=True)
    one = Reranker(path, device="cpu").compute_score(PAIRS)
    rr = Reranker(path, device=["cpu", "cpu"])
    try:
        np.testing.assert_allclose(rr.compute_score(PAIRS), one, atol=1e-5)
        assert rr.compute_score(PAIRS[:1]) == pytest.approx(one[:1], abs=1e-5)  # one pair: no pool round trip
    finally:
        rr.close()


class InProcessPool:
    """Stands in for DevicePool: splits like WorkerPool and runs each chunk on ``owner`` itself (no processes)."""

    def __init__(self, owner: object, workers: int = 3) -> None:
        self.owner, self.workers, self.chunks = owner, workers, []

    def wants(self, n: int) -> bool:
        return n > 1

    def map(self, method, items, **kwargs):
        size = -(-len(items) // self.workers)
        chunks = [items[i : i + size] for i in range(0, len(items), size)]
        self.chunks.append([len(c) for c in chunks])
        self.owner._parallel = self.real  # the chunk runs on the worker's own (single-device) object
        try:
            return [method(self.owner, c, **kwargs) for c in chunks]
        finally:
            self.owner._parallel = self


def _in_process(rr):
    fake = InProcessPool(rr)
    fake.real, rr._parallel = rr._parallel, fake
    return fake


@pytest.mark.slow
def test_llm_rerankers_split_and_join_in_order(tmp_path: Path) -> None:
    """LLM, layerwise and lightweight rerankers route several-device calls through their pool, order kept."""
    from flagembed.inference import LightweightReranker

    path = tiny_rerankers.build_decoder_lm(tmp_path / "lw", "llama", layers=3, heads=True)
    for cls, kw in ((LLMReranker, {}), (LayerwiseReranker, {"cutoff_layers": [2, 3]}), (LightweightReranker, {})):
        rr = cls(path, device="cpu")
        one = rr.compute_score(PAIRS, **kw)
        fake = _in_process(rr)
        np.testing.assert_allclose(rr.compute_score(PAIRS, **kw), one, atol=1e-5)
        assert fake.chunks == [[3, 3, 3]], cls.__name__
        first = [row[:1] for row in one] if isinstance(one[0], list) else one[:1]
        np.testing.assert_allclose(rr.compute_score(PAIRS[:1], **kw), first, atol=1e-5)
        assert fake.chunks == [[3, 3, 3]]


def test_pool_factory_rebuilds_the_same_class_and_arguments(tmp_path: Path) -> None:
    path = tiny_rerankers.build_decoder_lm(tmp_path / "lw", "llama", layers=3, heads=True)
    rr = LayerwiseReranker(path, device="cpu", cutoff_layers=[2], max_length=64, prompt="relevant?")
    factory = rr._parallel.factory
    assert factory.func is LayerwiseReranker and factory.args == (str(rr.path),)
    assert factory.keywords["cutoff_layers"] == [2] and factory.keywords["prompt"] == "relevant?"
    assert factory.keywords["show_progress"] is False and "device" not in factory.keywords
    from flagembed import LayerWiseFlagLLMReranker

    compat = LayerWiseFlagLLMReranker(str(path), devices="cpu", cutoff_layers=[2])
    assert compat._parallel.factory.func is LayerwiseReranker  # workers get the translated arguments, not FE's
