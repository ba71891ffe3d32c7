"""Rebuild flagembed/data/scifact_sample.jsonl (+ queries) from ../shared/data/scifact-train.

The sample holds the relevant abstracts of 40 train claims plus random other abstracts (seed 0),
300 documents in all, so the demo has real matches to find. Licence: see flagembed/data/README.md.
"""

import json
import random
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT.parent / "shared" / "data" / "scifact-train"
OUT = ROOT / "flagembed" / "data"
N_DOCS, N_QUERIES = 300, 40


def main() -> None:
    corpus = {}
    with open(SRC / "corpus.jsonl", encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            corpus[d["_id"]] = d
    queries = {}
    with open(SRC / "queries.jsonl", encoding="utf-8") as f:
        for line in f:
            q = json.loads(line)
            queries[q["_id"]] = q["text"]
    qrels: dict[str, list[str]] = {}
    with open(SRC / "qrels" / "train.tsv", encoding="utf-8") as f:
        next(f)
        for line in f:
            qid, did, _ = line.rstrip("\n").split("\t")
            qrels.setdefault(qid, []).append(did)
    rng = random.Random(0)
    chosen_q = sorted(rng.sample(sorted(qrels), N_QUERIES), key=int)
    docs = {d for q in chosen_q for d in qrels[q]}
    others = sorted(set(corpus) - docs)
    docs |= set(rng.sample(others, N_DOCS - len(docs)))
    OUT.mkdir(parents=True, exist_ok=True)
    with open(OUT / "scifact_sample.jsonl", "w", encoding="utf-8") as f:
        for did in sorted(docs, key=int):
            d = corpus[did]
            f.write(json.dumps({"_id": did, "title": d["title"], "text": d["text"]}, ensure_ascii=False) + "\n")
    with open(OUT / "scifact_sample_queries.jsonl", "w", encoding="utf-8") as f:
        for qid in chosen_q:
            rel = [d for d in qrels[qid] if d in docs]
            f.write(json.dumps({"_id": qid, "text": queries[qid], "relevant": rel}, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
