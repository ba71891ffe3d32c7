"""What loading an index checks: required files, paths inside the folder, ids, vectors and weights."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from flagembed.index import DenseIndex, IndexFormatError, MultiVectorIndex, SparseIndex

RNG = np.random.default_rng(0)
IDS = ["a", "b", "c", "d"]


def _manifest(path: Path) -> dict:
    return json.loads((path / "manifest.json").read_text(encoding="utf-8"))


def _rewrite(path: Path, **changes) -> None:
    """Apply ``changes`` to the manifest and recompute every listed checksum (a consistent forgery)."""
    m = {**_manifest(path), **changes}
    m["files"] = {n: hashlib.sha256((path / n).read_bytes()).hexdigest() for n in m["files"] if (path / n).is_file()}
    (path / "manifest.json").write_text(json.dumps(m), encoding="utf-8")


def _dense(path: Path, kind: str = "flat") -> Path:
    index = DenseIndex(8, kind=kind)
    index.add(IDS, RNG.standard_normal((4, 8)).astype("float32"))
    index.save(path)
    return path


def _sparse(path: Path) -> Path:
    index = SparseIndex(10)
    index.add(IDS, [{"1": 0.5}, {"2": 1.0}, {"1": 0.2, "3": 0.4}, {"9": 0.1}])
    index.save(path)
    return path


def _multi(path: Path) -> Path:
    index = MultiVectorIndex(4)
    index.add(IDS, [RNG.standard_normal((n, 4)).astype("float32") for n in (1, 2, 3, 2)])
    index.save(path)
    return path


BUILDERS = {"dense": (_dense, DenseIndex), "sparse": (_sparse, SparseIndex), "multivector": (_multi, MultiVectorIndex)}


@pytest.mark.parametrize("kind", list(BUILDERS))
def test_emptied_files_map_does_not_disable_verification(tmp_path, kind) -> None:
    build, cls = BUILDERS[kind]
    path = build(tmp_path / "idx")
    state = json.loads((path / "ids.json").read_text())
    state["labels"] = state["labels"][::-1]  # swapped ids would return wrong documents
    (path / "ids.json").write_text(json.dumps(state))
    m = _manifest(path)
    m["files"] = {}
    (path / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(IndexFormatError, match="does not list"):
        cls.load(path)


@pytest.mark.parametrize("name", ["../../etc/hostname", "/etc/hostname", "sub/../../x"])
def test_paths_outside_the_folder_are_refused(tmp_path, name) -> None:
    path = _dense(tmp_path / "idx")
    m = _manifest(path)
    m["files"][name] = "0" * 64
    (path / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(IndexFormatError, match="not a file inside the index"):
        DenseIndex.load(path)


def test_symlink_leading_outside_is_refused(tmp_path) -> None:
    path = _dense(tmp_path / "idx")
    outside = tmp_path / "ids.json"
    outside.write_bytes((path / "ids.json").read_bytes())
    (path / "ids.json").unlink()
    (path / "ids.json").symlink_to(outside)
    with pytest.raises(IndexFormatError, match="outside the index"):
        DenseIndex.load(path)


@pytest.mark.parametrize(
    "state, match",
    [
        ({"labels": ["a", "a", "c", "d"], "alive": [1, 1, 1, 1]}, "appears twice"),
        ({"labels": ["a", 2, "c", "d"], "alive": [1, 1, 1, 1]}, "not a string"),
        ({"labels": ["a", "b", "c"], "alive": [1, 1, 1, 1]}, "equally long"),
        ({"labels": ["a", "b", "c", "d"], "alive": [1, 1, 1, 7]}, "not 0 or 1"),
    ],
)
@pytest.mark.parametrize("kind", list(BUILDERS))
def test_bad_ids_are_refused(tmp_path, kind, state, match) -> None:
    build, cls = BUILDERS[kind]
    path = build(tmp_path / "idx")
    (path / "ids.json").write_text(json.dumps(state))
    _rewrite(path)
    with pytest.raises(IndexFormatError, match=f"ids.json.*{match}"):
        cls.load(path)


def test_dead_duplicate_ids_still_load(tmp_path) -> None:
    index = DenseIndex(8, kind="hnsw")  # hnsw keeps removed slots as tombstones: a re-added id repeats there
    index.add(IDS, RNG.standard_normal((4, 8)).astype("float32"))
    index.remove(["a"])
    index.add(["a"], RNG.standard_normal((1, 8)).astype("float32"))
    index.save(tmp_path / "idx")
    assert sorted(DenseIndex.load(tmp_path / "idx").ids) == IDS


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_nan_dense_vectors_are_refused(tmp_path, kind) -> None:
    import faiss

    path = _dense(tmp_path / "idx", kind)
    index = faiss.read_index(str(path / "index.faiss"))
    if kind == "flat":
        vectors = faiss.rev_swig_ptr(index.get_xb(), index.ntotal * index.d)
    else:
        flat = faiss.downcast_index(index.storage)
        vectors = faiss.rev_swig_ptr(flat.get_xb(), flat.ntotal * flat.d)
    vectors[3] = np.nan
    faiss.write_index(index, str(path / "index.faiss"))
    _rewrite(path)
    with pytest.raises(IndexFormatError, match="index.faiss.*NaN"):
        DenseIndex.load(path)


def test_faiss_garbage_wrong_type_and_missing_params(tmp_path) -> None:
    import faiss

    path = _dense(tmp_path / "idx")
    (path / "index.faiss").write_bytes(b"not a faiss index")
    _rewrite(path)
    with pytest.raises(IndexFormatError, match="cannot read index.faiss"):
        DenseIndex.load(path)
    path = _dense(tmp_path / "idx2")
    faiss.write_index(faiss.IndexFlatL2(8), str(path / "index.faiss"))
    _rewrite(path)
    with pytest.raises(IndexFormatError, match="not a 'flat' IP index"):
        DenseIndex.load(path)
    path = _dense(tmp_path / "idx3")
    _rewrite(path, params={"kind": "flat", "options": {}})
    with pytest.raises(IndexFormatError, match="params.dim"):
        DenseIndex.load(path)


@pytest.mark.parametrize("value, match", [(-0.5, "finite and >= 0"), (np.nan, "finite and >= 0")])
def test_bad_sparse_weights_are_refused(tmp_path, value, match) -> None:
    path = _sparse(tmp_path / "idx")
    mat = sp.load_npz(path / "weights.npz").tocsr()
    mat.data[0] = value
    sp.save_npz(path / "weights.npz", mat, compressed=False)
    _rewrite(path)
    with pytest.raises(IndexFormatError, match=match):
        SparseIndex.load(path)


def test_bad_multivectors_are_refused(tmp_path) -> None:
    path = _multi(tmp_path / "idx")
    flat = np.load(path / "vectors.npy")
    flat[0, 0] = np.inf
    np.save(path / "vectors.npy", flat)
    _rewrite(path)
    with pytest.raises(IndexFormatError, match="vectors.npy.*NaN or infinite"):
        MultiVectorIndex.load(path)
    np.save(path / "vectors.npy", np.zeros((8, 5), np.float32))  # wrong dim
    _rewrite(path)
    with pytest.raises(IndexFormatError, match="vectors.npy must hold float"):
        MultiVectorIndex.load(path)
    (path / "vectors.npy").write_bytes(b"garbage")
    _rewrite(path)
    with pytest.raises(IndexFormatError, match="cannot read vectors.npy"):
        MultiVectorIndex.load(path)


def test_round_trips_still_load(tmp_path) -> None:
    for kind in ("flat", "hnsw"):
        assert DenseIndex.load(_dense(tmp_path / kind, kind)).ids == IDS
    ivf = DenseIndex(8, kind="ivfpq", nlist=2, pq_m=2, nbits=4)
    ivf.add([str(i) for i in range(32)], RNG.standard_normal((32, 8)).astype("float32"))
    ivf.save(tmp_path / "ivf")
    assert len(DenseIndex.load(tmp_path / "ivf")) == 32
    assert SparseIndex.load(_sparse(tmp_path / "s")).ids == IDS
    assert MultiVectorIndex.load(_multi(tmp_path / "m")).ids == IDS
