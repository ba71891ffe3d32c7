"""BM25 alone, all-MiniLM-L6-v2 alone and their hybrid on SciFact-train; BM25 speed/scores against bm25s itself.

Usage: PYTHONPATH=. .venv/bin/python benchmarks/bm25_hybrid.py [--data ../shared/data/scifact-train]
Queries are the train claims with judgements, in file order: fusion weights are chosen on the first
``--tune`` claims, nDCG@10 is reported on the last ``--dev`` claims (disjoint). Dense vectors are cached
under bench_results/bm25_hybrid_cache. Prints two tables; writes bench_results/bm25_hybrid.json.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
from _common import ROOT, SHARED, print_table, timed, write_json

from flagembed.evaluate import evaluate_run, load_retrieval
from flagembed.evaluate.cache import EmbeddingCache
from flagembed.evaluate.retrieval import encode_retrieval_data
from flagembed.index import DenseIndex
from flagembed.index.bm25 import BM25Index, BM25Tokenizer
from flagembed.index.bm25_fusion import fuse_with_dense

W_GRID = [round(x, 2) for x in np.arange(0.05, 1.0, 0.05)]


def ndcg10(qrels: dict, results, qids: list[str]) -> float:
    run = {q: dict(zip(ids, scores)) for q, ids, scores in zip(qids, results.ids, results.scores)}
    return evaluate_run({q: qrels[q] for q in qids}, run, (10,), ("ndcg",)).scores["ndcg_at_10"]


def bm25s_peer(tokens: list[list[str]]):
    import bm25s

    retriever = bm25s.BM25()
    retriever.index(tokens, show_progress=False)
    return retriever


def main() -> None:
    ap = argparse.ArgumentParser()
    default = Path(os.environ.get("FLAGEMBED_SHARED_DATA", SHARED)) / "scifact-train"
    ap.add_argument("--data", type=Path, default=default)
    ap.add_argument("--model", default="all-MiniLM-L6-v2")
    ap.add_argument("--tune", type=int, default=300)
    ap.add_argument("--dev", type=int, default=100)
    ap.add_argument("--candidates", type=int, default=100)
    args = ap.parse_args()
    if not (args.data / "corpus.jsonl").is_file():
        raise SystemExit(f"missing {args.data}: pass --data <scifact-train folder>")
    data = load_retrieval(args.data, "train")
    qids = list(data.queries)
    tune_ids, dev_ids = qids[: args.tune], qids[-args.dev :]
    if set(tune_ids) & set(dev_ids):
        raise SystemExit(f"--tune {args.tune} + --dev {args.dev} exceed the {len(qids)} claims")
    doc_ids, doc_texts = data.doc_ids(), data.doc_texts()
    qtext = data.queries

    # ---- BM25: ours vs bm25s on the same tokens
    tok = BM25Tokenizer()
    bm25 = BM25Index(tok)
    build_s, _ = timed(lambda: (bm25.add(doc_ids, doc_texts), bm25.search("warm", 1)))
    queries_all = [qtext[q] for q in qids]
    ours_s, ours = timed(lambda: bm25.search(queries_all, 10), repeat=3)
    tokens, qtokens = tok.tokenize(doc_texts), tok.tokenize(queries_all)
    peer_build_s, peer = timed(lambda: bm25s_peer(tokens))
    peer_s, (pdocs, pscores) = timed(lambda: peer.retrieve(qtokens, k=10, show_progress=False), repeat=3)
    diffs, list_diffs = [], []  # per-document exact scores of bm25s' hits; and the ranked score lists
    for qi in range(len(qids)):
        hits = [doc_ids[d] for d, sc in zip(pdocs[qi], pscores[qi]) if sc > 0]
        if hits:
            exact = bm25.scores([queries_all[qi]], hits)[0]
            diffs.extend(np.abs(exact - pscores[qi][: len(hits)]).tolist())
            list_diffs.extend(np.abs(np.asarray(ours.scores[qi][: len(hits)]) - pscores[qi][: len(hits)]).tolist())
    same_top = np.mean([ours.ids[qi][:1] == [doc_ids[pdocs[qi][0]]] for qi in range(len(qids)) if pscores[qi][0] > 0])

    # ---- dense
    from flagembed import Embedder

    embedder = Embedder(args.model)
    cache = EmbeddingCache(ROOT / "bench_results" / "bm25_hybrid_cache")
    enc_s, (qvec, cvec) = timed(lambda: encode_retrieval_data(embedder, data, cache=cache))
    dense = DenseIndex(cvec.shape[1], kind="flat")
    dense.add(doc_ids, cvec)
    qpos = {q: i for i, q in enumerate(qids)}

    def run_dense(ids: list[str]):
        return dense.search(qvec[[qpos[q] for q in ids]], 10)

    def run_bm25(ids: list[str]):
        return bm25.search([qtext[q] for q in ids], 10)

    def run_hybrid(ids: list[str], w: float, fusion: str):
        return fuse_with_dense(
            dense,
            qvec[[qpos[q] for q in ids]],
            bm25,
            [qtext[q] for q in ids],
            10,
            weights={"dense": 1 - w, "bm25": w},
            fusion=fusion,  # type: ignore[arg-type]
            candidates=args.candidates,
        )

    chosen = {}
    for fusion in ("weighted", "rrf"):
        tuned = [(ndcg10(data.qrels, run_hybrid(tune_ids, w, fusion), tune_ids), w) for w in W_GRID]
        chosen[fusion] = max(tuned)[1]
    rows, record = [], {}
    systems = {
        "BM25 (flagembed, bm25s inside)": lambda ids: run_bm25(ids),
        f"dense {args.model}": lambda ids: run_dense(ids),
        f"hybrid weighted (w_bm25={chosen['weighted']})": lambda ids: run_hybrid(ids, chosen["weighted"], "weighted"),
        f"hybrid RRF (w_bm25={chosen['rrf']})": lambda ids: run_hybrid(ids, chosen["rrf"], "rrf"),
        "hybrid weighted 0.5/0.5 (untuned)": lambda ids: run_hybrid(ids, 0.5, "weighted"),
        "hybrid RRF 0.5/0.5 (untuned)": lambda ids: run_hybrid(ids, 0.5, "rrf"),
    }
    for name, fn in systems.items():
        dev_score, tune_score = ndcg10(data.qrels, fn(dev_ids), dev_ids), ndcg10(data.qrels, fn(tune_ids), tune_ids)
        rows.append([name, f"{100 * dev_score:.2f}", f"{100 * tune_score:.2f}"])
        record[name] = {"dev_ndcg_at_10": dev_score, "tune_ndcg_at_10": tune_score}
    print(f"SciFact-train, {len(doc_ids)} docs; dev = last {len(dev_ids)} claims, tune = first {len(tune_ids)} claims")
    print_table(["system", "nDCG@10 dev", "nDCG@10 tune"], rows)
    print()
    speed = [
        ["flagembed BM25Index", f"{build_s:.2f}", f"{ours_s:.3f}", f"{len(qids) / ours_s:.0f}"],
        ["bm25s (numpy backend)", f"{peer_build_s:.2f}", f"{peer_s:.3f}", f"{len(qids) / max(peer_s, 1e-9):.0f}"],
    ]
    print_table(["BM25 on the same tokens", "build s", f"search {len(qids)} q s", "queries/s"], speed)
    print(f"max |score diff| over bm25s' top-10 hits: {max(diffs):.2e} per document, {max(list_diffs):.2e} per rank")
    print(f"same top-1 document: {100 * same_top:.1f}% of claims (ties may pick another document of equal score)")
    path = write_json(
        "bm25_hybrid",
        {
            "ndcg_at_10": record,
            "chosen_weights": chosen,
            "speed": {"ours_build_s": build_s, "ours_search_s": ours_s, "bm25s_build_s": peer_build_s},
            "bm25s_search_s": peer_s,
            "max_score_diff": max(diffs),
            "max_ranked_score_diff": max(list_diffs),
            "dense_encode_s": enc_s,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
