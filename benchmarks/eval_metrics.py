"""Ranking metrics speed: flagembed's vectorized evaluate_run vs pytrec_eval, same run, same numbers.

Usage: .venv/bin/python benchmarks/eval_metrics.py [--queries 2000 --depth 1000]
Prints a table (seconds, ratio) and the largest per-metric difference; writes bench_results/eval_metrics.json.
"""

from __future__ import annotations

import argparse

import numpy as np
import pytrec_eval
from _common import print_table, timed, write_json

from flagembed.evaluate import evaluate_run

KS = (1, 3, 5, 10, 100, 1000)


def make_case(n_queries: int, depth: int, n_docs: int, seed: int = 0) -> tuple[dict, dict]:
    rng = np.random.default_rng(seed)
    doc_names = np.array([f"doc{i}" for i in range(n_docs)])
    qrels, run = {}, {}
    for q in range(n_queries):
        rel = rng.choice(n_docs, size=int(rng.integers(1, 10)), replace=False)
        qrels[f"q{q}"] = {doc_names[d]: int(rng.integers(1, 3)) for d in rel}
        hits = rng.choice(n_docs, size=depth, replace=False)
        scores = np.round(rng.random(depth), 3)  # ties
        run[f"q{q}"] = dict(zip(doc_names[hits].tolist(), scores.tolist()))
    return qrels, run


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--depth", type=int, default=1000)
    ap.add_argument("--docs", type=int, default=50000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    qrels, run = make_case(args.queries, args.depth, args.docs)
    ks = ",".join(map(str, KS))
    measures = {f"ndcg_cut.{ks}", f"map_cut.{ks}", f"recall.{ks}", f"P.{ks}"}

    def peer() -> dict:
        return pytrec_eval.RelevanceEvaluator(qrels, measures).evaluate(run)

    def ours():
        return evaluate_run(qrels, run, KS, ("ndcg", "map", "recall", "precision"))

    def beir_style() -> dict:
        """What BEIR / FlagEmbedding run for all six metric families: pytrec_eval plus Python MRR / R_cap loops."""
        scores = peer()
        extra = {}
        for qid, hits in run.items():
            ranked = [d for d, _ in sorted(hits.items(), key=lambda kv: kv[1], reverse=True)]
            relevant = {d for d, r in qrels[qid].items() if r > 0}
            for k in KS:
                first = next((i for i, d in enumerate(ranked[:k]) if d in relevant), None)
                extra[(qid, "mrr", k)] = 0.0 if first is None else 1 / (first + 1)
                extra[(qid, "rcap", k)] = len(relevant & set(ranked[:k])) / min(len(relevant), k)
        return scores

    t_peer, ref = timed(peer, args.repeat)
    t_ours, res = timed(ours, args.repeat)
    t_beir, _ = timed(beir_style, 1)
    t_all, _ = timed(lambda: evaluate_run(qrels, run, KS), args.repeat)
    names = {"ndcg_cut": "ndcg", "map_cut": "map", "recall": "recall", "P": "precision"}
    worst = 0.0
    for trec, mine in names.items():
        for k in KS:
            ref_mean = float(np.mean([v[f"{trec}_{k}"] for v in ref.values()]))
            worst = max(worst, abs(ref_mean - res.scores[f"{mine}_at_{k}"]))
    rows = [
        ["pytrec_eval (nDCG/MAP/R/P)", f"{t_peer:.3f}", "1.00x"],
        ["flagembed.evaluate_run (nDCG/MAP/R/P)", f"{t_ours:.3f}", f"{t_peer / t_ours:.2f}x"],
        ["pytrec_eval + BEIR MRR/R_cap loops (all 6)", f"{t_beir:.3f}", f"{t_peer / t_beir:.2f}x"],
        ["flagembed.evaluate_run (all 6)", f"{t_all:.3f}", f"{t_peer / t_all:.2f}x"],
    ]
    print(f"{args.queries} queries x {args.depth} hits, 24 metrics (nDCG/MAP/Recall/P at {ks}); best of {args.repeat}")
    print_table(["implementation", "seconds", "speed vs pytrec_eval"], rows)
    print(f"largest difference in a mean metric: {worst:.2e}")
    path = write_json(
        "eval_metrics",
        {
            "queries": args.queries,
            "depth": args.depth,
            "pytrec_eval_s": t_peer,
            "flagembed_s": t_ours,
            "speedup": t_peer / t_ours,
            "beir_style_all_metrics_s": t_beir,
            "flagembed_all_metrics_s": t_all,
            "speedup_all_metrics_vs_beir_style": t_beir / t_all,
            "max_abs_diff": worst,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
