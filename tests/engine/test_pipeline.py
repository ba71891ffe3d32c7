import threading

import numpy as np
import pytest
import torch

from flagembed.engine import EngineConfig, Tokenized
from flagembed.engine.pipeline import run_pipelined

CPU = torch.device("cpu")


def _tokenize(texts):
    ids = [[len(w) for w in t.split()] or [0] for t in texts]
    return Tokenized(ids=ids, truncated=np.array([len(x) > 5 for x in ids], dtype=bool))


def _step(batch):
    return (batch.input_ids * batch.attention_mask).sum(dim=1, keepdim=True).float()


def _texts(n, seed=0):
    rng = np.random.default_rng(seed)
    return [" ".join("x" * int(k) for k in rng.integers(1, 9, size=rng.integers(1, 9))) for _ in range(n)]


@pytest.mark.parametrize("chunk", [1, 7, 50, 1000])
def test_order_and_truncation_count(chunk):
    texts = _texts(50)
    out, truncated = run_pipelined(texts, _tokenize, _step, EngineConfig(CPU, batch_size=4), chunk_size=chunk)
    assert out[:, 0].tolist() == [float(sum(len(w) for w in t.split())) for t in texts]
    assert truncated == sum(len(t.split()) > 5 for t in texts)


def test_tokenizer_runs_in_a_background_thread_ahead_of_the_model():
    threads = set()

    def tok(texts):
        threads.add(threading.current_thread().name)
        return _tokenize(texts)

    run_pipelined(_texts(20), tok, _step, EngineConfig(CPU), chunk_size=5)
    assert threads and all(name.startswith("flagembed-tokenize") for name in threads)


def test_tokenizer_error_propagates():
    calls = []

    def tok(texts):
        calls.append(len(texts))
        if len(calls) == 2:
            raise ValueError("bad text in chunk 2")
        return _tokenize(texts)

    with pytest.raises(ValueError, match="bad text in chunk 2"):
        run_pipelined(_texts(30), tok, _step, EngineConfig(CPU), chunk_size=10)


def test_model_error_propagates_and_stops_prefetching():
    calls = []

    def tok(texts):
        calls.append(len(texts))
        return _tokenize(texts)

    def step(batch):
        raise RuntimeError("model failed")

    with pytest.raises(RuntimeError, match="model failed"):
        run_pipelined(_texts(100), tok, step, EngineConfig(CPU), chunk_size=10)
    assert len(calls) <= 2  # at most one chunk was tokenized ahead


def test_empty_and_bad_chunk():
    assert run_pipelined([], _tokenize, _step, EngineConfig(CPU)) == ([], 0)
    with pytest.raises(ValueError, match="chunk_size"):
        run_pipelined(["a"], _tokenize, _step, EngineConfig(CPU), chunk_size=0)
