"""Ray Data corpus encoding on a real local Ray cluster: equal to one process, resumable, survives a dead actor."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from flagembed.distributed import (
    EncodeJobError,
    EncodeStalledError,
    ShardError,
    actor_cpus,
    encode_corpus,
    load_shards,
)

ray = pytest.importorskip("ray", reason="ray is not installed")
pytest.importorskip("ray.data", reason="ray[data] is not installed")

N_DOCS = 1000
N_MINILM = 300
MINILM_KW = {"max_length": 64, "batch_size": 64}  # the same settings on both sides; 64 tokens keep CI fast


@pytest.fixture(scope="module")
def cluster():
    """One local Ray cluster for the module; 4 logical CPUs on this 2-core machine (actors use fractions)."""
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _write_corpus(src_dir: Path, folder: Path, n: int) -> Path:
    """The first ``n`` SciFact-train abstracts over two JSONL files (60 % / 40 %; shards never cross files)."""
    src = src_dir / "scifact-train" / "corpus.jsonl"
    if not src.is_file():
        pytest.skip("scifact-train is absent")
    lines = src.read_text(encoding="utf-8").splitlines()[:n]
    cut = n * 3 // 5
    (folder / "a.jsonl").write_text("\n".join(lines[:cut]) + "\n", encoding="utf-8")
    (folder / "b.jsonl").write_text("\n\n".join(lines[cut:]), encoding="utf-8")  # blank lines are skipped
    return folder


@pytest.fixture(scope="module")
def corpus(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_corpus(shared_data, tmp_path_factory.mktemp("corpus"), N_DOCS)


@pytest.fixture(scope="module")
def small_corpus(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """300 abstracts for the real MiniLM model: 1,000 take minutes on a loaded 2-core CI machine."""
    return _write_corpus(shared_data, tmp_path_factory.mktemp("small"), N_MINILM)


def _docs_by_id(folder: Path) -> tuple[list[str], list[dict[str, str]]]:
    recs = [json.loads(line) for f in sorted(folder.glob("*.jsonl")) for line in f.read_text().splitlines() if line]
    recs.sort(key=lambda r: r["_id"])
    return [r["_id"] for r in recs], [{"title": r["title"], "text": r["text"]} for r in recs]


def test_actor_cpus_leave_room_for_ray_data() -> None:
    assert actor_cpus(2, 2, None, 0) == 0.75
    assert actor_cpus(8, 2, None, 1) == 1.0
    with pytest.raises(ValueError, match="would hold all 2 CPUs"):
        actor_cpus(2, 2, 1.0, 0)  # the deadlock configuration
    with pytest.raises(ValueError, match="num_actors"):
        actor_cpus(2, 0, None, 0)


@pytest.mark.slow
def test_minilm_two_actors_equal_one_process_and_rerun_skips(cluster, small_corpus, minilm_path, tmp_path) -> None:
    from flagembed.inference import Embedder

    out = tmp_path / "shards"
    seen: list[tuple[int, int]] = []
    kw = {"shard_size": 100, "num_actors": 2, "model_kwargs": MINILM_KW}
    report = encode_corpus(minilm_path, small_corpus, out, on_progress=lambda d, t: seen.append((d, t)), **kw)
    assert (report.shards, report.encoded, report.rows) == (4, 4, N_MINILM)  # 180 + 120 records, 100 a shard
    assert seen[-1] == (4, 4)
    data = load_shards(out)
    ids, docs = _docs_by_id(small_corpus)
    assert data.ids == ids and len(set(data.ids)) == N_MINILM  # complete, unique, in id order
    assert data.docs == docs
    single = Embedder(minilm_path, device="cpu", **MINILM_KW).encode_corpus(docs)
    np.testing.assert_allclose(data.dense, single, atol=1e-6, rtol=0)

    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*.parquet")}
    again = encode_corpus(minilm_path, small_corpus, out, shard_size=100, num_actors=2, model_kwargs=MINILM_KW)
    assert (again.skipped, again.encoded) == (4, 0)
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*.parquet")} == mtimes
    with pytest.raises(ShardError, match="another job .*shard_size"):
        encode_corpus(minilm_path, small_corpus, out, shard_size=120, model_kwargs=MINILM_KW)


@pytest.mark.slow
def test_m3_survives_a_killed_actor_and_resumes_a_lost_shard(cluster, corpus, tmp_path) -> None:
    import tiny_m3

    from flagembed.inference import M3Embedder

    m3 = tiny_m3.build_m3(tmp_path / "m3")
    out = tmp_path / "shards"
    report = encode_corpus(m3, corpus, out, shard_size=200, num_actors=2, kill_at_shard=2, max_retries=2)
    assert (out / ".test-killed-actor").is_file()  # the actor really died mid-run
    assert (report.shards, report.rows) == (5, N_DOCS)
    data = load_shards(out)
    ids, docs = _docs_by_id(corpus)
    assert data.ids == ids
    ref = M3Embedder(m3, device="cpu").encode_corpus(docs, output="batch", return_sparse=True)
    np.testing.assert_allclose(data.dense, ref.dense, atol=1e-6, rtol=0)
    assert data.sparse.shape == ref.sparse.shape
    np.testing.assert_allclose(data.sparse.toarray(), ref.sparse.toarray(), atol=1e-6, rtol=0)

    _indexes_from_shards(out, M3Embedder(m3, device="cpu"), ref, ids, tmp_path)

    (out / "shard-000003.parquet").unlink()  # a lost shard: only it is encoded again
    again = encode_corpus(m3, corpus, out, shard_size=200, num_actors=1)
    assert (again.skipped, again.encoded, again.rows) == (4, 1, 200)
    np.testing.assert_array_equal(load_shards(out).dense, data.dense)


def _indexes_from_shards(out: Path, m3, ref, ids: list[str], tmp_path: Path) -> None:
    """The shards become an in-process index and a Milvus Lite collection without re-encoding."""
    from flagembed.distributed.build import searcher_from_shards
    from flagembed.inference import M3Output

    searcher = searcher_from_shards(out, m3)
    assert len(searcher) == N_DOCS and searcher.modes == ["dense", "sparse"]
    queries = M3Output(dense=ref.dense[:5], sparse=ref.sparse[:5])
    local = searcher.search_encoded(queries, 10, modes=["sparse"])
    from flagembed.index import HybridSearcher, SparseIndex

    encoded = SparseIndex(m3.vocab_size)
    encoded.add(ids, ref.sparse)
    want = HybridSearcher(sparse=encoded).search_encoded(queries, 10, modes=["sparse"])
    for g, w in zip(local.scores, want.scores):  # the same as indexing the one-process vectors
        np.testing.assert_allclose(g, w, atol=1e-5)
    assert local.docs[0][0]["text"]
    try:
        import milvus_lite  # noqa: F401
    except ImportError:
        return
    from flagembed.distributed.build import store_from_shards

    with store_from_shards(out, tmp_path / "shards.db", m3) as store:
        assert len(store) == N_DOCS
        got = store.search_encoded(queries, 10, modes=["sparse"])
        for g, w in zip(got.scores, local.scores):
            np.testing.assert_allclose(g, w, atol=1e-5)


@pytest.mark.slow
def test_cli_embed_ray_then_index_build_from_shards(cluster, small_corpus, tiny_bert, tmp_path) -> None:
    from typer.testing import CliRunner

    from flagembed.cli import app

    runner = CliRunner()
    shards, index = tmp_path / "shards", tmp_path / "ix"
    args = ["embed", "--ray", "-m", str(tiny_bert), "-i", str(small_corpus), "-o", str(shards), "--shard-size", "150"]
    res = runner.invoke(app, [*args, "--actors", "2"])
    assert res.exit_code == 0, res.output
    assert f"encoded {N_MINILM} documents in 3 shard(s) (0 already done)" in res.output
    res = runner.invoke(app, ["index", "build", "--shards", str(shards), "--out", str(index)])
    assert res.exit_code == 0, res.output
    assert f"indexed {N_MINILM} documents (dense)" in res.output
    res = runner.invoke(app, ["search", str(index), "cancer treatment", "--json", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert len(json.loads(res.output.strip().splitlines()[-1])) == 10


@pytest.mark.slow
def test_bad_record_fails_naming_file_and_record(cluster, tmp_path, tiny_bert) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"_id": "1", "text": "fine"}\n{"_id": "2", "title": "no text"}\n', encoding="utf-8")
    with pytest.raises(EncodeJobError, match=r"bad\.jsonl record 1: needs an '_id' \(or 'id'\) and a string 'text'"):
        encode_corpus(tiny_bert, bad, tmp_path / "out", shard_size=10, max_retries=0)
    with pytest.raises(ShardError, match="unfinished"):
        load_shards(tmp_path / "out")
    with pytest.raises(EncodeStalledError, match="no shard finished in 0.01 s"):
        encode_corpus(tiny_bert, bad, tmp_path / "out2", shard_size=1, stall_timeout=0.01)
