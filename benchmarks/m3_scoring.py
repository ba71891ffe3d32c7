"""Sparse and ColBERT scoring of many queries × documents: flagembed's indexes vs per-pair scoring.

The peer is FlagEmbedding's per-pair API re-implemented naïvely here (its ``compute_lexical_matching_score``
on two dicts and its ``colbert_score`` with a torch einsum per pair), run on a subset of the queries and
extrapolated linearly (every pair costs the same there). Scores of the checked queries must agree.
Synthetic M3-shaped data: Zipf token ids over a 250k vocabulary, L2-normalized ColBERT vectors.

    python benchmarks/m3_scoring.py [--queries 1000 --docs 10000 --colbert-dim 128 --peer-queries 5]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from flagembed.index import MultiVectorIndex, SparseIndex

VOCAB = 250_002


def lexical(n: int, lo: int, hi: int, rng: np.random.Generator) -> list[dict[str, float]]:
    out = []
    for _ in range(n):
        ids = np.unique(np.minimum(rng.zipf(1.3, size=int(rng.integers(lo, hi))), VOCAB - 1))
        out.append({str(i): np.float32(w) for i, w in zip(ids, rng.uniform(0.01, 0.4, len(ids)))})
    return out


def multivec(n: int, lo: int, hi: int, dim: int, rng: np.random.Generator) -> list[np.ndarray]:
    out = []
    for _ in range(n):
        v = rng.standard_normal((int(rng.integers(lo, hi)), dim)).astype(np.float32)
        out.append(v / np.linalg.norm(v, axis=1, keepdims=True))
    return out


def peer_lexical(a: dict[str, float], b: dict[str, float]) -> float:
    """The reference's dict × dict lexical matching score."""
    score = 0.0
    for token, weight in a.items():
        if token in b:
            score += weight * b[token]
    return score


def peer_colbert(q: np.ndarray, p: np.ndarray) -> torch.Tensor:
    """The reference's per-pair colbert_score (numpy in, torch einsum, max, sum / n_q)."""
    q_t, p_t = torch.from_numpy(q), torch.from_numpy(p)
    token_scores = torch.einsum("in,jn->ij", q_t, p_t)
    scores, _ = token_scores.max(-1)
    return torch.sum(scores) / q_t.size(0)


def topk(scores: np.ndarray, k: int) -> list[tuple[int, float]]:
    order = np.argsort(-scores, kind="stable")[:k]
    return [(int(i), float(scores[i])) for i in order]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--docs", type=int, default=10_000)
    ap.add_argument("--colbert-dim", type=int, default=128)
    ap.add_argument("--peer-queries", type=int, default=5, help="queries the per-pair peer scores (extrapolated)")
    ap.add_argument("--top-k", type=int, default=100)
    ap.add_argument("--device", default=None, help="torch device for ColBERT scoring (default: cuda if present)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/m3_scoring.json"))
    args = ap.parse_args()
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    rng = np.random.default_rng(0)
    ids = [f"d{i}" for i in range(args.docs)]
    rows = []

    # ---------------- sparse
    d_lex, q_lex = lexical(args.docs, 20, 80, rng), lexical(args.queries, 4, 16, rng)
    sparse = SparseIndex(VOCAB)
    sparse.add(ids, d_lex)
    t0 = time.perf_counter()
    res = sparse.search(q_lex, args.top_k)
    ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    peer_scores = [np.array([peer_lexical(q, d) for d in d_lex]) for q in q_lex[: args.peer_queries]]
    peer = (time.perf_counter() - t0) * args.queries / args.peer_queries
    agree = all(
        [ids[i] for i, s in topk(ps, args.top_k) if s > 0][: len(res.ids[qi])] == res.ids[qi]
        and np.allclose([s for _, s in topk(ps, len(res.ids[qi]))], res.scores[qi], rtol=1e-5, atol=1e-6)
        for qi, ps in enumerate(peer_scores)
    )
    rows.append(("sparse", ours, peer, agree))

    # ---------------- ColBERT
    d_col = multivec(args.docs, 16, 96, args.colbert_dim, rng)
    q_col = multivec(args.queries, 8, 24, args.colbert_dim, rng)
    mv = MultiVectorIndex(args.colbert_dim, device=device)
    mv.add(ids, d_col)
    mv.search(q_col[:2], args.top_k)  # warm-up: builds the padded blocks once, as a loaded index would
    t0 = time.perf_counter()
    res = mv.search(q_col, args.top_k)
    ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    peer_scores = [np.array([float(peer_colbert(q, d)) for d in d_col]) for q in q_col[: args.peer_queries]]
    peer = (time.perf_counter() - t0) * args.queries / args.peer_queries
    agree = all(
        [ids[i] for i, _ in topk(ps, args.top_k)] == res.ids[qi]
        and np.allclose([s for _, s in topk(ps, args.top_k)], res.scores[qi], rtol=1e-4, atol=1e-5)
        for qi, ps in enumerate(peer_scores)
    )
    rows.append(("colbert", ours, peer, agree))

    print(f"{args.queries} queries x {args.docs} docs, top-{args.top_k}, colbert dim {args.colbert_dim}, {device}")
    print(f"{'mode':8} {'flagembed s':>12} {'per-pair s':>12} {'speed-up':>9}  scores agree")
    for mode, ours, peer, agree in rows:
        print(f"{mode:8} {ours:12.3f} {peer:12.1f} {peer / ours:8.1f}x  {agree}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "config": {**vars(args), "out": str(args.out), "device": device, "torch_threads": torch.get_num_threads()},
        "results": [
            {"mode": m, "flagembed_s": o, "per_pair_s_extrapolated": p, "speedup": p / o, "scores_agree": a}
            for m, o, p, a in rows
        ],
    }
    args.out.write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
