"""Train a cross-encoder from all-MiniLM-L6-v2 on SciFact train claims; dev nDCG@10 of retrieval vs retrieval + rerank.

Split and mining as ``finetune_scifact.py``: the 809 SciFact train queries (../shared/data/scifact-train) are
shuffled with seed 0 into 709 train and 100 dev claims; hard negatives for the train claims are mined by
all-MiniLM-L6-v2 over the full 5,183-doc corpus. The cross-encoder is the bundled all-MiniLM-L6-v2 encoder
with a new 1-logit head, trained by ``finetune_reranker`` (group softmax CE; ``--calibration-ratio`` of the
train claims held out to fit the normalize=True sigmoid). Those calibration claims are never trained on, so
they also choose -- on their own nDCG@10, never the dev claims' -- the epoch checkpoint, the rerank depth
(``--depths``) and the fusion weight with the retriever's scores (``--weights``; 1 = reranker scores alone).
Evaluation then runs the CLI once with the choice,
``flagembed eval retrieval --model all-MiniLM-L6-v2 --rerank <checkpoint> --rerank-top-k D --rerank-weight W``
on a BEIR folder of the 100 dev claims, and reports both rows. Also checks that the saved folder scores the same
in sentence-transformers' ``CrossEncoder``. No teacher reranker is available offline, so there is no KD row.

    nice -n 5 .venv/bin/python benchmarks/finetune_reranker.py [--max-steps N] [--n-dev 100]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, add_bf16_option, print_table, training_bf16, write_json  # noqa: E402
from finetune_scifact import load_split  # noqa: E402


def write_beir(folder: Path, corpus: dict, queries: dict, qids: list[str], qrels: dict, split: str) -> None:
    """A BEIR folder holding the whole corpus, the ``qids`` queries and their qrels as ``split``."""
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    with open(folder / "corpus.jsonl", "w", encoding="utf-8") as f:
        for did, text in corpus.items():
            f.write(json.dumps({"_id": did, "title": "", "text": text}, ensure_ascii=False) + "\n")
    with open(folder / "queries.jsonl", "w", encoding="utf-8") as f:
        for q in qids:
            f.write(json.dumps({"_id": q, "text": queries[q]}, ensure_ascii=False) + "\n")
    with open(folder / "qrels" / f"{split}.tsv", "w", encoding="utf-8") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        for q in qids:
            for d, s in qrels[q].items():
                f.write(f"{q}\t{d}\t{s}\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--output", default=str(ROOT / "out" / "finetune_reranker"))
    ap.add_argument("--query-max-len", type=int, default=32)
    ap.add_argument("--passage-max-len", type=int, default=128)
    ap.add_argument("--group-size", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=8, help="queries per step (x group size pairs)")
    ap.add_argument("--epochs", type=float, default=2.0)
    ap.add_argument("--max-steps", type=int, default=-1)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--range-for-sampling", default="3-103", help="MiniLM ranks the negatives are drawn from")
    ap.add_argument("--calibration-ratio", type=float, default=0.1)
    ap.add_argument("--n-dev", type=int, default=100, help="dev claims evaluated (of the 100 held out)")
    ap.add_argument("--n-train", type=int, default=0, help="train claims used (0: all 709)")
    ap.add_argument("--corpus-size", type=int, default=0, help="sub-corpus size (0: the full 5,183 docs)")
    ap.add_argument("--eval-queries", type=int, default=0, help="evaluate only the first N dev claims (0: all)")
    ap.add_argument("--depths", default="10,20,30", help="rerank depths the calibration claims choose from")
    ap.add_argument("--weights", default="0.5,0.6,0.7,0.8,0.9,1.0", help="fusion weights to choose from")
    add_bf16_option(ap)
    args = ap.parse_args()
    args.bf16 = training_bf16(args.bf16)

    from flagembed.evaluate.cache import EmbeddingCache
    from flagembed.evaluate.loaders import load_retrieval
    from flagembed.evaluate.report import load_results
    from flagembed.evaluate.retrieval import encode_retrieval_data
    from flagembed.inference import Embedder, Reranker
    from flagembed.train import (
        RerankerDataArguments,
        RerankerModelArguments,
        RerankerTrainingArguments,
        finetune_reranker,
    )
    from flagembed.train.mining import mine_hard_negatives

    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    train, dev, corpus, queries, qrels = load_split()
    dev = dev[: args.n_dev]
    train = train[: args.n_train] if args.n_train else train
    if args.corpus_size:  # a sub-corpus for a loaded machine: every judged doc of the used claims + random others
        keep = {d for q in train + dev for d in qrels[q]}
        rest = [d for d in corpus if d not in keep]
        extra = np.random.default_rng(1).permutation(len(rest))[: max(0, args.corpus_size - len(keep))]
        keep |= {rest[i] for i in extra}
        corpus = {d: t for d, t in corpus.items() if d in keep}
    cids = list(corpus)
    times: dict[str, float] = {}

    # the dev BEIR folder first: the corpus is encoded once, through the cache `flagembed eval retrieval` reads
    if args.eval_queries:  # the corpus (and its cached vectors) stays the one built for all n_dev claims
        dev = dev[: args.eval_queries]
    beir = out / "scifact-dev"
    write_beir(beir, corpus, queries, dev, qrels, "dev")
    eval_out = out / "eval"
    data = load_retrieval(beir, "dev")
    texts = data.doc_texts()
    # fp32, as `flagembed eval retrieval` encodes on CPU by default: its cache then holds these very vectors
    base = Embedder("all-MiniLM-L6-v2", device="cpu", dtype="fp32", batch_size=128)
    t = time.perf_counter()
    _, base_vecs = encode_retrieval_data(base, data, cache=EmbeddingCache(eval_out / "embedding_cache"))
    times["encode_corpus_s"] = time.perf_counter() - t
    print(f"corpus encoded in {times['encode_corpus_s']:.0f}s", flush=True)

    t = time.perf_counter()
    examples = [{"query": queries[q], "pos": [corpus[d] for d in qrels[q]]} for q in train]
    mined, stats = mine_hard_negatives(
        base,
        examples,
        candidate_pool=texts,
        corpus_vectors=base_vecs,
        range_for_sampling=args.range_for_sampling,
        negative_number=15,
    )
    times["mine_s"] = time.perf_counter() - t
    data_file = out / "scifact_train_minedHN.jsonl"
    with open(data_file, "w", encoding="utf-8") as f:
        for rec in mined:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    print(f"mined: {stats.as_dict()}", flush=True)

    model_dir = out / "model"
    steps_per_epoch = max(1, int(len(train) * (1 - args.calibration_ratio)) // args.batch_size)
    t, cpu = time.perf_counter(), time.process_time()
    result = finetune_reranker(
        RerankerModelArguments(model_name_or_path="all-MiniLM-L6-v2", model_type="encoder"),
        RerankerDataArguments(
            train_data=[str(data_file)],
            train_group_size=args.group_size,
            query_max_len=args.query_max_len,
            passage_max_len=args.passage_max_len,
            calibration_ratio=args.calibration_ratio,
        ),
        RerankerTrainingArguments(
            output_dir=str(model_dir),
            overwrite_output_dir=True,
            learning_rate=args.lr,
            num_train_epochs=args.epochs,
            max_steps=args.max_steps,
            per_device_train_batch_size=args.batch_size,
            warmup_steps=max(1, int(0.1 * steps_per_epoch * args.epochs)),
            weight_decay=0.01,
            logging_steps=5,
            save_strategy="epoch",  # per-epoch weights stay in checkpoint-*/ for inspection
            save_only_model=True,
            report_to="none",
            use_cpu=True,
            bf16=args.bf16,
            seed=42,
        ),
    )
    times["finetune_s"] = time.perf_counter() - t
    times["finetune_cpu_s"] = time.process_time() - cpu
    print(f"trained {result.global_step} steps in {times['finetune_s']:.0f}s, loss {result.train_loss:.4f}", flush=True)

    # choice on the calibration claims (held out from training): checkpoint x depth x fusion weight
    t = time.perf_counter()
    from types import SimpleNamespace

    from flagembed.evaluate.metrics import evaluate_run
    from flagembed.evaluate.retrieval import dense_search, fuse_scores
    from flagembed.train.reranker_data import split_examples

    _, held = split_examples([SimpleNamespace(examples=mined)], args.calibration_ratio, 42)  # the trainer's split
    qid_of = {queries[q]: q for q in train}
    val = [qid_of[ex["query"]] for ex in held]
    depths = sorted(int(x) for x in args.depths.split(","))
    weights = [float(x) for x in args.weights.split(",")]
    val_run = dense_search(
        np.asarray(base.encode_queries([queries[q] for q in val])), base_vecs, val, data.doc_ids(), depths[-1]
    )
    val_qrels = {q: qrels[q] for q in val}
    doc_text = dict(zip(data.doc_ids(), texts))
    checkpoints = sorted(model_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    grid: list[dict] = []
    for ckpt in checkpoints:
        scorer = Reranker(str(ckpt), device="cpu", dtype="bf16" if args.bf16 else "fp32")
        keys = [(q, d) for q in val for d in list(val_run[q])[: depths[-1]]]  # dense_search lists best first
        raw = scorer.compute_score([(queries[q], doc_text[d]) for q, d in keys])
        scores: dict[str, dict[str, float]] = {q: {} for q in val}
        for (q, d), s in zip(keys, np.asarray(raw, dtype=np.float64).reshape(-1)):
            scores[q][d] = float(s)
        for depth in depths:
            for w in weights:
                run = {}
                for q in val:
                    top = dict(list(val_run[q].items())[:depth])
                    run[q] = fuse_scores({d: scores[q][d] for d in top}, top, w)
                ndcg = evaluate_run(val_qrels, run, [10]).scores["ndcg_at_10"]
                grid.append({"checkpoint": ckpt.name, "depth": depth, "weight": w, "ndcg_at_10": ndcg})
    val_base = evaluate_run(val_qrels, val_run, [10]).scores["ndcg_at_10"]
    best = max(grid, key=lambda g: g["ndcg_at_10"])
    alone = max((g for g in grid if g["weight"] == 1.0), key=lambda g: g["ndcg_at_10"], default=None)
    times["choose_s"] = time.perf_counter() - t
    print(f"calibration claims {len(val)}: retrieval {val_base * 100:.2f}; best {best}; "
          f"best unfused {alone}", flush=True)  # fmt: skip
    chosen = model_dir / best["checkpoint"]

    cmd = [
        str(Path(sys.executable).with_name("flagembed")), "eval", "retrieval",
        "--model", "all-MiniLM-L6-v2", "--data", str(beir), "--output", str(eval_out), "--split", "dev",
        "--rerank", str(chosen), "--rerank-top-k", str(best["depth"]), "--rerank-weight", str(best["weight"]),
        "--search-top-k", "100", "--k-values", "10",
        "--device", "cpu",
    ]  # fmt: skip
    print("$ flagembed", " ".join(cmd[1:]), flush=True)
    t = time.perf_counter()
    proc = subprocess.run(cmd, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True)
    times["eval_s"] = time.perf_counter() - t
    print(proc.stdout, proc.stderr[-2000:] if proc.returncode else "", flush=True)
    if proc.returncode:
        raise SystemExit(f"eval failed ({proc.returncode})")
    found = {r.reranker or "-": r.metrics for r in load_results(eval_out) if r.split == "dev"}
    plain = next(m for k, m in found.items() if k == "-")
    reranked = next(m for k, m in found.items() if k != "-")
    before, after = plain["ndcg_at_10"], reranked["ndcg_at_10"]

    from sentence_transformers import CrossEncoder

    pairs = [(queries[q], corpus[d]) for q in dev[:4] for d in list(qrels[q])[:1] + cids[:3]]
    ours = np.array(Reranker(str(model_dir), device="cpu", dtype="fp32").compute_score(pairs))
    ce = CrossEncoder(str(model_dir), device="cpu", max_length=512)
    st_diff = float(np.abs(ce.predict(pairs, convert_to_numpy=True) - ours).max())

    print(f"train claims {len(train)}, dev claims {len(dev)}, corpus {len(corpus)} docs", flush=True)
    rows = [
        ["all-MiniLM-L6-v2 retrieval", f"{before * 100:.2f}", "-"],
        [
            f"+ rerank top-{best['depth']}, {best['checkpoint']}, weight {best['weight']:g} (chosen on calibration)",
            f"{after * 100:.2f}",
            f"{(after - before) * 100:+.2f}",
        ],
        ["+ rerank with KD from a teacher", "n/a", "no teacher reranker available offline"],
    ]
    print_table([f"dev nDCG@10 ({len(dev)} held-out SciFact-train claims)", "nDCG@10", "gain (pts)"], rows)
    print(f"CrossEncoder vs flagembed max |diff|: {st_diff:.2e}; calibration: {result.calibration}; timings: {times}")
    path = write_json(
        "finetune_reranker",
        {
            "split": {"train": len(train), "dev": len(dev), "corpus": len(corpus), "seed": 0},
            "config": vars(args),
            "ndcg_at_10": {"retrieval": before, "reranked": after, "gain_points": (after - before) * 100},
            "choice": {"claims": len(val), "retrieval": val_base, "best": best, "best_unfused": alone, "grid": grid},
            "train": {"steps": result.global_step, "loss": result.train_loss, "history": result.loss_history},
            "calibration": result.calibration,
            "mining": stats.as_dict(),
            "crossencoder_max_abs_diff": st_diff,
            "timings_s": times,
        },
    )
    print(f"wrote {path}; model in {model_dir}")


if __name__ == "__main__":
    main()
