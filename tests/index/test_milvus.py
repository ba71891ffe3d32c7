"""MilvusStore on Milvus Lite: the same top-10 as the in-process HybridSearcher, deletes, filters, reopening."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tiny_models

pytest.importorskip("pymilvus", reason="pymilvus is not installed")
pytest.importorskip("milvus_lite", reason="milvus-lite is not installed")

from flagembed.index import HybridSearcher  # noqa: E402
from flagembed.index.milvus import MilvusStore, parse_store  # noqa: E402
from flagembed.inference import M3Embedder  # noqa: E402

N = 80
_rng = random.Random(7)
DOCS = [
    {
        "title": " ".join(_rng.sample(tiny_models.WORDS, 3)),
        "text": " ".join(_rng.choices(tiny_models.WORDS, k=_rng.randint(4, 30))),
        "year": 2000 + i % 25,
    }
    for i in range(N)
]
IDS = [f"d{i:03d}" for i in range(N)]
QUERIES = [" ".join(_rng.sample(tiny_models.WORDS, _rng.randint(2, 6))) for _ in range(8)]


@pytest.fixture(scope="module")
def m3(tmp_path_factory: pytest.TempPathFactory) -> M3Embedder:
    from tiny_m3 import build_m3

    return M3Embedder(build_m3(tmp_path_factory.mktemp("models") / "m3"), device="cpu")


@pytest.fixture(scope="module")
def local(m3: M3Embedder) -> HybridSearcher:
    return HybridSearcher.build(m3, DOCS, IDS, modes=["dense", "sparse"], candidates=N)


@pytest.fixture(scope="module")
def store(m3: M3Embedder, tmp_path_factory: pytest.TempPathFactory):
    s = MilvusStore.create(tmp_path_factory.mktemp("milvus") / "docs.db", m3, candidates=N)
    s.add(IDS, DOCS)
    yield s
    s.close()


def assert_same_top(got, want, atol: float = 1e-5) -> None:
    """Same scores, and the same ids wherever a score is not tied with a neighbour."""
    for gi, gs, wi, ws in zip(got.ids, got.scores, want.ids, want.scores):
        assert len(gi) == len(wi)
        np.testing.assert_allclose(gs, ws, atol=atol)
        for k, (a, b) in enumerate(zip(gi, wi)):
            tied = any(abs(ws[k] - ws[j]) <= atol for j in (k - 1, k + 1) if 0 <= j < len(ws))
            assert a == b or tied, (k, a, b, gs, ws)


def test_parse_store() -> None:
    assert parse_store("milvus://db.example:19530/papers") == ("http://db.example:19530", "papers")
    assert parse_store("x/docs.db#mine") == (str(Path("x/docs.db").absolute()), "mine")
    assert parse_store("docs.db")[1] == "flagembed"
    with pytest.raises(ValueError, match="milvus://host:port/collection"):
        parse_store("docs.sqlite")


@pytest.mark.parametrize(
    "kw",
    [
        {"modes": ["dense"]},
        {"modes": ["sparse"]},
        {"modes": ["dense", "sparse"], "fusion": "weighted"},
        {"modes": ["dense", "sparse"], "fusion": "weighted", "weights": {"dense": 1.0, "sparse": 0.3}},
    ],
    ids=["dense", "sparse", "hybrid-weighted", "hybrid-weights"],
)
def test_top10_equals_in_process(store: MilvusStore, local: HybridSearcher, kw: dict) -> None:
    assert len(store) == N and store.modes == ["dense", "sparse"]
    got = store.search(QUERIES, top_k=10, **kw)
    want = local.search(QUERIES, top_k=10, **kw)
    assert_same_top(got, want)
    assert got.docs[0][0]["text"] == DOCS[IDS.index(got.ids[0][0])]["text"]


@pytest.fixture(scope="module")
def synthetic(m3: M3Embedder, store: MilvusStore):
    """Well-separated random vectors (the tiny model's dense vectors nearly all tie, which RRF ranks arbitrarily)."""
    import scipy.sparse as sp

    from flagembed.index import DenseIndex, SparseIndex
    from flagembed.inference import M3Output

    rng = np.random.default_rng(0)

    def unit(n: int) -> np.ndarray:
        x = rng.standard_normal((n, m3.dim)).astype(np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    def lexical(n: int) -> sp.csr_matrix:
        return sp.random(n, m3.vocab_size, density=0.08, format="csr", dtype=np.float32, random_state=rng)

    dense, sparse = unit(N), lexical(N)
    queries = M3Output(dense=unit(len(QUERIES)), sparse=lexical(len(QUERIES)))
    milvus = MilvusStore.create(store.uri + "#synthetic", m3)
    milvus.add_encoded(IDS, dense=dense, sparse=sparse, docs=DOCS)
    d, s_ = DenseIndex(m3.dim), SparseIndex(m3.vocab_size)
    d.add(IDS, dense)
    s_.add(IDS, sparse)
    yield milvus, HybridSearcher(dense=d, sparse=s_), queries
    milvus.close()


@pytest.mark.parametrize("weights", [{"dense": 1.0, "sparse": 1.0}, {"dense": 0.4, "sparse": 0.2}])
@pytest.mark.parametrize("fusion", ["rrf", "weighted"])
def test_fusion_over_the_same_vectors_equals_in_process(synthetic, weights: dict, fusion: str) -> None:
    milvus, local_index, queries = synthetic
    kw = {"modes": ["dense", "sparse"], "fusion": fusion, "weights": weights, "candidates": N}
    assert_same_top(milvus.search_encoded(queries, 10, **kw), local_index.search_encoded(queries, 10, **kw), atol=1e-6)


def test_metadata_filter(store: MilvusStore, m3: M3Embedder) -> None:
    keep = [i for i, d in enumerate(DOCS) if d["year"] >= 2015]
    subset = HybridSearcher.build(m3, [DOCS[i] for i in keep], [IDS[i] for i in keep], modes=["dense"])
    got = store.search(QUERIES, top_k=10, modes=["dense"], filter='metadata["year"] >= 2015')
    assert all(h["metadata"]["year"] >= 2015 for row in got.docs for h in row)
    assert_same_top(got, subset.search(QUERIES, top_k=10, modes=["dense"]))


def test_delete_and_reinsert_by_id(m3: M3Embedder, local: HybridSearcher, tmp_path: Path) -> None:
    with MilvusStore.create(tmp_path / "d.db", m3) as s:
        s.add(IDS, DOCS)
        before = s.search(QUERIES, top_k=10, modes=["dense"])
        gone = before.ids[0][:3]
        assert s.remove(gone + ["nope"]) == 3 and len(s) == N - 3
        after = s.search(QUERIES, top_k=10, modes=["dense"])
        assert not set(gone) & {d for row in after.ids for d in row}
        with pytest.raises(ValueError, match=f"id {IDS[5]!r} is already stored"):
            s.add([IDS[5]], [DOCS[5]])
        s.add(gone, [DOCS[IDS.index(g)] for g in gone])
        assert_same_top(s.search(QUERIES, top_k=10, modes=["dense"]), before)


@pytest.mark.slow  # a fresh interpreter imports torch and pymilvus
def test_second_process_reopens_the_collection(m3: M3Embedder, local: HybridSearcher, tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    with MilvusStore.create(str(path) + "#papers", m3) as s:
        s.add(IDS, DOCS)
    code = (
        "import json, sys; from flagembed.index.milvus import MilvusStore; "
        "s = MilvusStore.open(sys.argv[1]); "
        "r = s.search(json.loads(sys.argv[2]), top_k=10, modes=['dense', 'sparse']); "
        "print(json.dumps({'n': len(s), 'ids': r.ids, 'scores': r.scores})); s.close()"
    )
    root = str(Path(__file__).parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, "-c", code, str(path) + "#papers", json.dumps(QUERIES)],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["n"] == N

    class R:
        ids, scores = out["ids"], out["scores"]

    assert_same_top(R, local.search(QUERIES, top_k=10, modes=["dense", "sparse"]))


def test_open_refuses_another_model(store: MilvusStore, tmp_path: Path) -> None:
    from flagembed.index import IndexMismatchError
    from flagembed.inference import Embedder

    other = Embedder(tiny_models.build_bert(tmp_path / "bert"), device="cpu")
    with pytest.raises(FileNotFoundError, match="no collection 'nope'"):
        MilvusStore.open(str(store.uri) + "#nope", other)
    with pytest.raises(IndexMismatchError, match="different model"):
        MilvusStore.open(store.uri, other)
    with MilvusStore.open(store.uri, store.embedder) as again:  # the model it was built with is accepted
        assert len(again) == N
