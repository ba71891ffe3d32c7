"""DenseIndex against brute-force numpy search; persistence and bad input."""

from __future__ import annotations

import numpy as np
import pytest

from flagembed.index import DenseIndex, IndexFormatError, IndexMismatchError, SearchResults


def _data(n: int = 300, dim: int = 16, nq: int = 7, seed: int = 0) -> tuple[list[str], np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    docs = rng.standard_normal((n, dim)).astype(np.float32)
    queries = rng.standard_normal((nq, dim)).astype(np.float32)
    return [f"d{i}" for i in range(n)], docs, queries


def _brute(ids: list[str], docs: np.ndarray, queries: np.ndarray, k: int) -> list[list[str]]:
    scores = queries @ docs.T
    return [[ids[j] for j in np.argsort(-row, kind="stable")[:k]] for row in scores]


def test_flat_matches_brute_force() -> None:
    ids, docs, queries = _data()
    index = DenseIndex(16)
    index.add(ids[:100], docs[:100])
    index.add(ids[100:], docs[100:])  # incremental
    res = index.search(queries, top_k=10)
    assert isinstance(res, SearchResults) and len(res) == 7
    assert res.ids == _brute(ids, docs, queries, 10)
    expected = np.sort(queries @ docs.T, axis=1)[:, ::-1][:, :10]
    np.testing.assert_allclose(np.array(res.scores), expected, rtol=1e-5, atol=1e-5)
    assert res.to_dict()[0] == dict(zip(res.ids[0], res.scores[0]))


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivfpq"])
def test_remove_then_search_matches_brute_force(kind: str) -> None:
    ids, docs, queries = _data(n=600, dim=16)
    options = {"nlist": 8, "pq_m": 4, "nbits": 6, "nprobe": 8} if kind == "ivfpq" else {}
    index = DenseIndex(16, kind=kind, **options)
    index.add(ids, docs)
    gone = [f"d{i}" for i in range(0, 600, 3)]
    assert index.remove(gone + ["nope"]) == len(gone)
    assert len(index) == 400
    keep = [i for i in range(600) if i % 3]
    truth = _brute([ids[i] for i in keep], docs[keep], queries, 10)
    res = index.search(queries, top_k=10)
    assert not set(gone) & {d for row in res.ids for d in row}
    if kind == "flat":
        assert res.ids == truth
    else:  # approximate kinds: most of the true top-10 must be found
        recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(res.ids, truth)])
        assert recall >= (0.9 if kind == "hnsw" else 0.5)


def test_save_load_round_trip(tmp_path) -> None:
    ids, docs, queries = _data()
    index = DenseIndex(16)
    index.model_info = {"name": "m", "pooling": "cls"}
    index.add(ids, docs)
    index.remove(["d5"])
    index.save(tmp_path / "idx")
    loaded = DenseIndex.load(tmp_path / "idx", model_info={"name": "m", "pooling": "cls"})
    assert loaded.search(queries, 5) == index.search(queries, 5)
    assert len(loaded) == len(index)
    np.testing.assert_array_equal(loaded.vectors(["d7"]), docs[[7]])
    with pytest.raises(IndexMismatchError, match="pooling"):
        DenseIndex.load(tmp_path / "idx", model_info={"name": "m", "pooling": "mean"})


def test_corrupted_dir_raises_and_failed_save_keeps_original(tmp_path) -> None:
    ids, docs, _ = _data()
    index = DenseIndex(16)
    index.add(ids, docs)
    target = tmp_path / "idx"
    index.save(target)
    before = {p.name: p.read_bytes() for p in target.iterdir()}
    # a save that fails midway leaves the original untouched
    broken = DenseIndex(16)
    broken.add(["x"], docs[:1])
    broken._write = lambda tmp: (_ for _ in ()).throw(OSError("disk full"))  # type: ignore[method-assign]
    with pytest.raises(OSError, match="disk full"):
        broken.save(target)
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    # corruption is detected
    blob = bytearray((target / "index.faiss").read_bytes())
    blob[-5] ^= 0xFF
    (target / "index.faiss").write_bytes(bytes(blob))
    with pytest.raises(IndexFormatError, match="corrupted"):
        DenseIndex.load(target)
    with pytest.raises(IndexFormatError, match="not a flagembed index"):
        DenseIndex.load(tmp_path / "missing")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(IndexFormatError, match="refusing"):
        index.save(tmp_path / "other")
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"


def test_bad_input_and_empty() -> None:
    index = DenseIndex(4)
    assert index.search(np.ones((2, 4), np.float32), 3) == SearchResults([[], []], [[], []])
    with pytest.raises(ValueError, match="shape"):
        index.add(["a"], np.ones((1, 5)))
    with pytest.raises(ValueError, match="already"):
        index.add(["a", "a"], np.ones((2, 4)))
    index.add(["a"], np.ones((1, 4)))
    with pytest.raises(ValueError, match="already"):
        index.add(["a"], np.ones((1, 4)))
    with pytest.raises(TypeError, match=r"ids\[0\]"):
        index.add([3], np.ones((1, 4)))
    with pytest.raises(ValueError, match="top_k"):
        index.search(np.ones(4), 0)
    with pytest.raises(ValueError, match="kind"):
        DenseIndex(4, kind="lsh")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ivfpq"):
        DenseIndex(4, kind="ivfpq", pq_m=2, nlist=4).add(["x"], np.ones((1, 4)))
    assert index.search(np.ones(4), 10).ids == [["a"]]
