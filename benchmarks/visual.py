"""Batched image encoding (VisualEmbedder through the engine) vs the reference's one-image-per-call path.

Same tiny random model for both (BERT hidden ``--width``, 2 layers + EVA02 tower, 224 px, patch 16 →
196 image tokens, depth 2): ``encode_images(paths)`` in batches vs a loop of ``Visualized_BGE.encode(image=path)``
(one image per call, as the reference's API allows). Images are random PNG files on disk, decoded in both paths.

    nice -n 5 .venv/bin/python benchmarks/visual.py [--images 128] [--batch-size 32] [--threads 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_table, write_json  # noqa: E402


def build(tmp: Path, width: int) -> Path:
    from transformers import BertConfig, BertModel, BertTokenizerFast

    from flagembed.inference.visual import VisualEmbedder
    from flagembed.models.vision import EvaConfig

    text = tmp / "bert"
    text.mkdir(parents=True)
    (text / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "red", "blue"]) + "\n")
    tok = BertTokenizerFast.from_pretrained(str(text))
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(tok), hidden_size=width, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=2 * width, max_position_embeddings=256)  # fmt: skip
    BertModel(cfg).eval().save_pretrained(text, safe_serialization=True)
    tok.save_pretrained(text)
    tower = EvaConfig(image_size=224, patch_size=16, width=width, depth=2, heads=2, mlp_hidden=int(width * 2.6667),
                      embed_dim=width)  # fmt: skip
    model = VisualEmbedder(text, vision=tower, device="cpu")
    return model.save_pretrained(tmp / "visual")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from flagembed.inference.compat import Visualized_BGE
    from flagembed.inference.visual import VisualEmbedder

    tmp = Path(tempfile.mkdtemp(prefix="visual_bench_"))
    folder = build(tmp, args.width)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(args.images):
        w, h = int(rng.integers(200, 400)), int(rng.integers(200, 400))
        path = tmp / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    batched = VisualEmbedder(folder, device="cpu", image_batch_size=args.batch_size)
    reference = Visualized_BGE(model_name_bge=str(folder), model_weight=str(folder), device="cpu")
    batched.encode_images(paths[:4])  # warm-up
    reference.encode(image=paths[0])
    t0 = time.perf_counter()
    a = batched.encode_images(paths)
    t_batched = time.perf_counter() - t0
    t0 = time.perf_counter()
    b = torch.cat([reference.encode(image=p) for p in paths]).numpy()
    t_single = time.perf_counter() - t0
    diff = float(np.abs(a - b).max())
    n = args.images
    rows = [
        [f"batched (batch {args.batch_size})", n, f"{t_batched:.2f}", f"{n / t_batched:.1f}",
         f"{t_single / t_batched:.2f}"],
        ["one image per call (reference API)", n, f"{t_single:.2f}", f"{n / t_single:.1f}", "1.00"],
    ]  # fmt: skip
    print(f"tiny model: hidden {args.width}, 196 image tokens, {args.threads} torch threads; max |diff| {diff:.1e}")
    print_table(["path", "images", "seconds", "images/s", "speed-up"], rows)
    path = write_json("visual", {"args": vars(args), "batched_s": t_batched, "single_s": t_single,
                                  "ratio": t_single / t_batched, "max_abs_diff": diff})  # fmt: skip
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
