"""HybridSearcher on a tiny M3 model against brute force over the same vectors; persistence and errors."""

from __future__ import annotations

import numpy as np
import pytest

from flagembed import M3Embedder
from flagembed.index import HybridSearcher, IndexFormatError, IndexMismatchError

CORPUS = [
    "the protein gene cancer study",
    "dense vector search model",
    "sparse token retrieval score",
    "blood virus hiv drug therapy",
    "city country water fire earth",
    "human mouse brain cells",
    "clinical data analysis method",
    "fast slow new old good bad",
    "rerank the passage document",
    "what is the role of the gene",
    "light dark red blue green",
    "risk of disease in patients",
]
QUERIES = ["gene cancer", "search for a dense vector", "hiv therapy risk"]


@pytest.fixture(scope="module")
def m3(tmp_path_factory: pytest.TempPathFactory) -> M3Embedder:
    from tiny_m3 import build_m3

    return M3Embedder(build_m3(tmp_path_factory.mktemp("models") / "tiny-m3"), device="cpu")


@pytest.fixture(scope="module")
def searcher(m3) -> HybridSearcher:
    return HybridSearcher.build(m3, CORPUS, [f"doc{i}" for i in range(len(CORPUS))])


def _brute_scores(m3: M3Embedder, weights: dict[str, float]) -> list[np.ndarray]:
    d = m3.encode(CORPUS, return_sparse=True, return_colbert_vecs=True)
    q = m3.encode_queries(QUERIES, return_sparse=True, return_colbert_vecs=True)
    out = []
    for qi in range(len(QUERIES)):
        scores = []
        for di in range(len(CORPUS)):
            parts = {
                "dense": float(q["dense_vecs"][qi] @ d["dense_vecs"][di]),
                "sparse": sum(w * d["lexical_weights"][di].get(t, 0.0) for t, w in q["lexical_weights"][qi].items()),
                "colbert": float(np.mean(np.max(q["colbert_vecs"][qi] @ d["colbert_vecs"][di].T, axis=1))),
            }
            scores.append(sum(weights[m] * parts[m] for m in weights) / sum(weights.values()))
        out.append(np.array(scores))
    return out


def _brute(m3: M3Embedder, weights: dict[str, float], k: int) -> list[list[str]]:
    return [[f"doc{i}" for i in np.argsort(-s, kind="stable")[:k]] for s in _brute_scores(m3, weights)]


@pytest.mark.parametrize(
    "weights",
    [
        {"dense": 0.4, "sparse": 0.2, "colbert": 0.4},
        {"dense": 1.0},
        {"sparse": 1.0},
        {"colbert": 1.0},
        {"dense": 1.0, "colbert": 3.0},
    ],
)
def test_matches_brute_force(m3, searcher, weights) -> None:
    res = searcher.search(QUERIES, top_k=4, modes=list(weights), weights=weights)
    expected = _brute(m3, weights, 4)
    if list(weights) == ["sparse"]:  # sparse lists only documents sharing a token
        assert all(got == exp[: len(got)] for got, exp in zip(res.ids, expected))
    else:
        # same top-k as brute force; documents with (near-)equal scores may come in either order
        for ids, brute in zip(res.ids, _brute_scores(m3, weights)):
            got = np.array([brute[int(i.removeprefix("doc"))] for i in ids])
            np.testing.assert_allclose(got, np.sort(brute)[::-1][: len(ids)], atol=1e-5)
            assert len(ids) == len(expected[0])


def test_rrf_and_save_load(m3, searcher, tmp_path) -> None:
    rrf = searcher.search(QUERIES, top_k=3, fusion="rrf")
    assert all(len(r) == 3 for r in rrf.ids)
    searcher.save(tmp_path / "idx")
    loaded = HybridSearcher.load(tmp_path / "idx", embedder=m3)
    assert loaded.search(QUERIES, 5) == searcher.search(QUERIES, 5)
    reopened = HybridSearcher.load(tmp_path / "idx", device="cpu")  # model rebuilt from the manifest
    assert reopened.search(QUERIES, 5).ids == searcher.search(QUERIES, 5).ids
    other = M3Embedder(m3.settings.path, device="cpu", pooling="mean")
    with pytest.raises(IndexMismatchError, match="pooling"):
        HybridSearcher.load(tmp_path / "idx", embedder=other)
    (tmp_path / "idx" / "colbert" / "vectors.npy").write_bytes(b"garbage")
    with pytest.raises(IndexFormatError, match="corrupted"):
        HybridSearcher.load(tmp_path / "idx", embedder=m3)


def test_add_remove(m3) -> None:
    s = HybridSearcher.build(m3, CORPUS[:6], [f"doc{i}" for i in range(6)], modes="dense,sparse")
    s.add([f"doc{i}" for i in range(6, 12)], CORPUS[6:])
    assert len(s) == 12 and s.remove(["doc0", "doc1"]) == 2
    hits = s.search(QUERIES, 12)
    assert all("doc0" not in r and len(r) == 10 for r in hits.ids)
    with pytest.raises(ValueError, match="already"):
        s.add(["doc5"], ["again"])


def test_bad_input(m3, searcher) -> None:
    with pytest.raises(ValueError, match="empty"):
        searcher.search(["ok", "  "])
    with pytest.raises(ValueError, match="special"):
        searcher.search("<s></s><pad>")
    with pytest.raises(ValueError, match="not a mode"):
        searcher.search("gene", modes=["dense", "splade"])
    with pytest.raises(ValueError, match="2 weights for 3 modes"):
        searcher.search("gene", weights=[0.5, 0.5])
    with pytest.raises(ValueError, match="top_k"):
        searcher.search("gene", top_k=0)
    dense_only = HybridSearcher.build(m3, CORPUS, modes=["dense"])
    with pytest.raises(ValueError, match="built with modes dense only"):
        dense_only.search("gene", modes="sparse")
    empty = HybridSearcher.build(m3, [])
    assert empty.search(QUERIES, 3).ids == [[], [], []]
