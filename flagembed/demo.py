"""The main job on bundled data: embed a SciFact sample, index it, and show the best matches for example claims."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from flagembed._io import read_jsonl
from flagembed.index import DenseIndex
from flagembed.inference import Embedder

DEFAULT_MODEL = "all-MiniLM-L6-v2"


def sample_paths() -> tuple[Path, Path]:
    """Paths of the bundled corpus and queries (see flagembed/data/README.md)."""
    base = Path(str(resources.files("flagembed") / "data"))
    return base / "scifact_sample.jsonl", base / "scifact_sample_queries.jsonl"


@dataclass
class DemoResult:
    """Ranked hits per query plus recall of the relevant abstracts in the top k."""

    queries: list[dict[str, Any]]
    hits: list[list[tuple[dict[str, Any], float]]]
    recall_at_k: float
    top_k: int
    seconds: float
    docs: int


def run_demo(model: str = DEFAULT_MODEL, top_k: int = 3, num_queries: int = 40, **embedder_kwargs: Any) -> DemoResult:
    """Embed the bundled corpus into an exact faiss index, search it with the bundled claims, return the hits."""
    import time

    corpus_path, query_path = sample_paths()
    corpus = list(read_jsonl(corpus_path))
    queries = list(read_jsonl(query_path))[:num_queries]
    start = time.perf_counter()
    embedder = Embedder(model, **embedder_kwargs)
    doc_emb = embedder.encode_corpus([{"title": d["title"], "text": d["text"]} for d in corpus])
    q_emb = embedder.encode_queries([q["text"] for q in queries])
    index = DenseIndex(embedder.dim)
    index.add([d["_id"] for d in corpus], doc_emb)
    results = index.search(q_emb, top_k=top_k)
    by_id = {d["_id"]: d for d in corpus}
    hits = [[(by_id[i], s) for i, s in zip(ids, scores)] for ids, scores in zip(results.ids, results.scores)]
    found = [len(set(ids) & set(q["relevant"])) / max(len(q["relevant"]), 1) for q, ids in zip(queries, results.ids)]
    return DemoResult(
        queries=queries,
        hits=hits,
        recall_at_k=float(np.mean(found)) if found else 0.0,
        top_k=top_k,
        seconds=time.perf_counter() - start,
        docs=len(corpus),
    )
