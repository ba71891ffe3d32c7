"""Fine-tune all-MiniLM-L6-v2 on SciFact train claims with mined hard negatives; dev nDCG@10 before/after.

Split: the 809 SciFact train queries (../shared/data/scifact-train) are shuffled with seed 0 into
709 train and 100 dev claims; the full 5,183-doc corpus is searched for dev. Steps: encode corpus
with the base model (reused for mining), mine hard negatives (ranks 10-210), fine-tune on CPU,
re-encode, evaluate with pytrec_eval, check the saved folder loads in sentence-transformers with
equal embeddings. Prints a table and writes bench_results/finetune_scifact.json.

    .venv/bin/python benchmarks/finetune_scifact.py [--max-steps N] [--output out/finetune_scifact]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, SHARED, contrastive_finetune, print_table, write_json, write_jsonl  # noqa: E402


def load_split(seed: int = 0, n_dev: int = 100) -> tuple[list[str], list[str], dict, dict, dict]:
    root = SHARED / "scifact-train"
    if not root.is_dir():
        raise SystemExit(f"missing {root}: the demonstration needs ../shared/data")
    corpus = {}
    with open(root / "corpus.jsonl", encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            corpus[str(d["_id"])] = f"{d['title']} {d['text']}".strip()
    queries = {}
    with open(root / "queries.jsonl", encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            queries[str(d["_id"])] = d["text"]
    qrels: dict[str, dict[str, int]] = {}
    with open(root / "qrels" / "train.tsv", encoding="utf-8") as f:
        next(f)
        for line in f:
            qid, did, score = line.rstrip("\n").split("\t")
            if int(score) > 0:
                qrels.setdefault(qid, {})[did] = int(score)
    qids = sorted(q for q in qrels if q in queries)
    order = np.random.default_rng(seed).permutation(len(qids))
    dev = [qids[i] for i in order[:n_dev]]
    train = [qids[i] for i in order[n_dev:]]
    return train, dev, corpus, queries, qrels


def ndcg_at_10(embedder, corpus_ids, corpus_vecs, queries, qids, qrels) -> float:
    import pytrec_eval

    from flagembed.index import DenseIndex

    index = DenseIndex(corpus_vecs.shape[1])
    index.add(corpus_ids, corpus_vecs)
    found = index.search(embedder.encode_queries([queries[q] for q in qids]), top_k=100)
    run = {q: {d: float(s) for d, s in zip(ids, scores)} for q, ids, scores in zip(qids, found.ids, found.scores)}
    ev = pytrec_eval.RelevanceEvaluator({q: qrels[q] for q in qids}, {"ndcg_cut.10"})
    return float(np.mean([v["ndcg_cut_10"] for v in ev.evaluate(run).values()]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--output", default=str(ROOT / "out" / "finetune_scifact"))
    ap.add_argument("--max-length", type=int, default=128, help="passage tokens (train and eval)")
    ap.add_argument("--group-size", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--epochs", type=float, default=2.0)
    ap.add_argument("--max-steps", type=int, default=-1)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--temperature", type=float, default=0.05)
    args = ap.parse_args()

    from flagembed.inference import Embedder
    from flagembed.train.mining import mine_hard_negatives

    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    train, dev, corpus, queries, qrels = load_split()
    cids = list(corpus)
    texts = [corpus[c] for c in cids]
    times: dict[str, float] = {}

    base = Embedder("all-MiniLM-L6-v2", device="cpu", max_length=args.max_length, batch_size=128)
    cache = out / f"base_corpus_{args.max_length}.npy"
    t = time.perf_counter()
    if cache.is_file():
        base_vecs = np.load(cache)
    else:
        base_vecs = base.encode_corpus(texts)
        np.save(cache, base_vecs)
    times["encode_corpus_base_s"] = time.perf_counter() - t
    before = ndcg_at_10(base, cids, base_vecs, queries, dev, qrels)
    print(f"base dev nDCG@10 = {before:.4f}", flush=True)

    t = time.perf_counter()
    examples = [{"query": queries[q], "pos": [corpus[d] for d in qrels[q]]} for q in train]
    mined, stats = mine_hard_negatives(
        base, examples, candidate_pool=texts, corpus_vectors=base_vecs, range_for_sampling="10-210", negative_number=15
    )
    times["mine_s"] = time.perf_counter() - t
    data_file = write_jsonl(out / "scifact_train_minedHN.jsonl", mined)
    print(f"mined: {stats.as_dict()}", flush=True)

    model_dir = out / "model"
    t, cpu = time.perf_counter(), time.process_time()
    result = contrastive_finetune(
        "all-MiniLM-L6-v2", data_file, model_dir, group_size=args.group_size, passage_max_len=args.max_length,
        warmup_steps=max(1, int(0.1 * len(train) // args.batch_size * args.epochs)), learning_rate=args.lr,
        num_train_epochs=args.epochs, max_steps=args.max_steps, per_device_train_batch_size=args.batch_size,
        temperature=args.temperature,
    )  # fmt: skip
    times["finetune_s"] = time.perf_counter() - t
    times["finetune_cpu_s"] = time.process_time() - cpu
    print(f"trained {result.global_step} steps in {times['finetune_s']:.0f}s, loss {result.train_loss:.4f}", flush=True)

    tuned = Embedder(str(model_dir), device="cpu", max_length=args.max_length, batch_size=128)
    t = time.perf_counter()
    tuned_vecs = tuned.encode_corpus(texts)
    times["encode_corpus_tuned_s"] = time.perf_counter() - t
    after = ndcg_at_10(tuned, cids, tuned_vecs, queries, dev, qrels)

    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(model_dir), device="cpu")
    st.max_seq_length = args.max_length
    sample = texts[:16]
    st_diff = float(np.abs(st.encode(sample, convert_to_numpy=True) - tuned_vecs[:16]).max())

    rows = [
        ["all-MiniLM-L6-v2 (base)", f"{before:.4f}", "-"],
        ["+ fine-tuned (flagembed)", f"{after:.4f}", f"{(after - before) * 100:+.2f} pts"],
    ]
    print_table(["model", "dev nDCG@10", "gain"], rows)
    print(f"ST vs flagembed max |diff| on saved model: {st_diff:.2e}; timings: {times}")
    path = write_json(
        "finetune_scifact",
        {
            "split": {"train": len(train), "dev": len(dev), "corpus": len(cids), "seed": 0},
            "config": vars(args),
            "ndcg_at_10": {"before": before, "after": after, "gain_points": (after - before) * 100},
            "train": {"steps": result.global_step, "loss": result.train_loss, "history": result.loss_history},
            "mining": stats.as_dict(),
            "st_max_abs_diff": st_diff,
            "timings_s": times,
        },
    )
    print(f"wrote {path}; model in {model_dir}")


if __name__ == "__main__":
    main()
