"""A tiny BEIR-layout retrieval folder for evaluation tests (with deliberately bad judgements)."""

from __future__ import annotations

import json
from pathlib import Path

DOCS = {
    "d1": ("Cats", "cats purr and sleep on warm windows"),
    "d2": ("Dogs", "dogs bark at the mail carrier every morning"),
    "d3": ("Rain", "rain falls from grey clouds over the city"),
    "d4": ("", "the stock market rose after the announcement"),
    "d5": ("Bread", "bread is baked from flour water and yeast"),
    "q1": ("Same id", "a document whose id equals a query id"),
}
QUERIES = {"q1": "why do cats purr", "q2": "what do dogs bark at", "q3": "how is bread made", "q9": "unjudged query"}
QRELS = [("q1", "d1", 1), ("q2", "d2", 2), ("q2", "d4", 1), ("q3", "d5", 1), ("q3", "missing-doc", 1), ("qX", "d1", 1)]


def write_beir(root: Path, split: str = "test") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "corpus.jsonl", "w", encoding="utf-8") as f:
        for i, (t, x) in DOCS.items():
            f.write(json.dumps({"_id": i, "title": t, "text": x}) + "\n")
    with open(root / "queries.jsonl", "w", encoding="utf-8") as f:
        for i, x in QUERIES.items():
            f.write(json.dumps({"_id": i, "text": x}) + "\n")
    (root / "qrels").mkdir(exist_ok=True)
    with open(root / "qrels" / f"{split}.tsv", "w", encoding="utf-8") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        for q, d, s in QRELS:
            f.write(f"{q}\t{d}\t{s}\n")
    return root
