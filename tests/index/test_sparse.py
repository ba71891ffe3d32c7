"""SparseIndex against brute-force dict intersection."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from flagembed.index import IndexFormatError, SparseIndex


def _weights(n: int, vocab: int, nnz: int, seed: int) -> list[dict[str, float]]:
    rng = np.random.default_rng(seed)
    return [
        {str(t): float(rng.uniform(0.01, 1)) for t in rng.choice(vocab, size=rng.integers(1, nnz), replace=False)}
        for _ in range(n)
    ]


def _brute(queries: list[dict], docs: list[dict], ids: list[str], k: int) -> tuple[list[list[str]], list[list[float]]]:
    out_ids, out_scores = [], []
    for q in queries:
        scored = [(sum(w * d[t] for t, w in q.items() if t in d), i) for i, d in enumerate(docs)]
        scored = [(s, i) for s, i in scored if any(t in docs[i] for t in q)]
        scored.sort(key=lambda x: (-x[0], x[1]))
        out_ids.append([ids[i] for _, i in scored[:k]])
        out_scores.append([s for s, _ in scored[:k]])
    return out_ids, out_scores


def test_matches_brute_force_with_dicts_and_csr(tmp_path) -> None:
    docs, queries = _weights(400, 60, 12, 0), _weights(9, 60, 5, 1)
    ids = [f"d{i}" for i in range(400)]
    index = SparseIndex(60)
    index.add(ids[:150], docs[:150])
    index.add(ids[150:], docs[150:])
    truth_ids, truth_scores = _brute(queries, docs, ids, 7)
    res = index.search(queries, top_k=7)
    assert res.ids == truth_ids
    np.testing.assert_allclose(np.array(res.scores), np.array(truth_scores), rtol=1e-5)
    as_csr = sp.csr_matrix(np.array([[q.get(str(t), 0.0) for t in range(60)] for q in queries], dtype=np.float32))
    assert index.search(as_csr, 7).ids == truth_ids
    # remove, then save/load round trip
    assert index.remove(["d1", "d2", "zzz"]) == 2
    keep = [i for i in range(400) if i not in (1, 2)]
    truth_ids, _ = _brute(queries, [docs[i] for i in keep], [ids[i] for i in keep], 7)
    assert index.search(queries, 7).ids == truth_ids
    index.save(tmp_path / "sp")
    loaded = SparseIndex.load(tmp_path / "sp")
    assert loaded.search(queries, 7) == index.search(queries, 7)
    expected = sum(w * docs[0][t] for t, w in queries[0].items() if t in docs[0])
    np.testing.assert_allclose(loaded.scores(queries[:1], ["d0"])[0, 0], expected, rtol=1e-5, atol=1e-7)
    with pytest.raises(IndexFormatError, match="sparse"):
        from flagembed.index import DenseIndex

        DenseIndex.load(tmp_path / "sp")


def test_empty_and_bad_input() -> None:
    index = SparseIndex(10)
    assert index.search([{"1": 1.0}], 3).ids == [[]]
    index.add(["a"], [{"1": 0.5}])
    assert index.search([{}], 3).ids == [[]]  # nothing shared -> no hits
    with pytest.raises(ValueError, match="outside the vocabulary"):
        index.add(["b"], [{"10": 1.0}])
    with pytest.raises(ValueError, match="columns"):
        index.search(sp.csr_matrix((1, 5)), 1)
    with pytest.raises(TypeError, match=r"weights\[0\]"):
        index.add(["c"], ["x"])
