"""MultiVectorIndex against a per-pair MaxSim loop."""

from __future__ import annotations

import numpy as np
import pytest

from flagembed.index import MultiVectorIndex
from flagembed.models import pad_vectors


def _vecs(n: int, dim: int, seed: int, max_len: int = 12) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        v = rng.standard_normal((int(rng.integers(1, max_len)), dim)).astype(np.float32)
        out.append(v / np.linalg.norm(v, axis=1, keepdims=True))
    return out


def _maxsim(q: np.ndarray, d: np.ndarray) -> float:
    return float(np.sum(np.max(q @ d.T, axis=1)) / len(q))


def _brute(queries, docs, ids, k):
    out = []
    for q in queries:
        s = np.array([_maxsim(q, d) for d in docs])
        out.append([ids[i] for i in np.argsort(-s, kind="stable")[:k]])
    return out


def test_matches_brute_force(tmp_path, monkeypatch) -> None:
    import flagembed.index.multivector as mv

    monkeypatch.setattr(mv, "_BLOCK_TOKENS", 64)  # many blocks
    monkeypatch.setattr(mv, "_PRODUCTS", 500)  # many query steps
    docs, queries = _vecs(150, 8, 0), _vecs(6, 8, 1, max_len=6)
    ids = [f"d{i}" for i in range(150)]
    index = MultiVectorIndex(8)
    index.add(ids[:50], docs[:50])
    pad, lens = pad_vectors(docs[50:], 8)
    index.add(ids[50:], pad, lengths=lens)  # padded form
    res = index.search(queries, top_k=5)
    assert res.ids == _brute(queries, docs, ids, 5)
    expected = [sorted((_maxsim(q, d) for d in docs), reverse=True)[:5] for q in queries]
    np.testing.assert_allclose(np.array(res.scores), np.array(expected), rtol=1e-5, atol=1e-6)
    # candidate reranking == brute force restricted to candidates
    cands = [ids[i::7] for i in range(6)]
    rer = index.search(queries, top_k=3, candidates=cands)
    for q, c, got in zip(queries, cands, rer.ids):
        assert got == _brute([q], [docs[int(x[1:])] for x in c], c, 3)[0]
    assert index.remove(["d3", "d4"]) == 2
    keep = [i for i in range(150) if i not in (3, 4)]
    assert index.search(queries, 5).ids == _brute(queries, [docs[i] for i in keep], [ids[i] for i in keep], 5)
    index.save(tmp_path / "mv")
    assert MultiVectorIndex.load(tmp_path / "mv").search(queries, 5) == index.search(queries, 5)


def test_empty_and_bad_input() -> None:
    index = MultiVectorIndex(4)
    assert index.search([np.ones((2, 4))], 3).ids == [[]]
    with pytest.raises(ValueError, match=r"vectors\[0\]"):
        index.add(["a"], [np.ones((2, 5))])
    with pytest.raises(ValueError, match="candidate lists"):
        index.add(["a"], [np.ones((2, 4))])
        index.search([np.ones((2, 4))], 1, candidates=[])
