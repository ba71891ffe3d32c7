"""Proof that Visualized-BGE training works: t2it on Pillow-drawn shapes, recall@1 on held-out combinations.

Images: a shape (circle, square, triangle, cross) in a colour (red, green, blue, yellow, purple) at a
position (left, right, top, bottom) on a noisy dark background, with random size and offset jitter.
Captions: ``"red circle left"``. A quarter of the 80 combinations (``(shape + colour + position) % 4 == 0``)
never appears in training; every shape/colour/position value and every pair of them still does.

Model: a tiny BERT (hidden 32, 2 layers, word-level vocabulary) + a random tiny EVA02 tower
(48 px, patch 8 → 36 image tokens, width 32, depth ``--depth``), trained with ``flagembed.train.visual``
(``t2it``: text query → image candidate, InfoNCE at temperature 0.02, in-batch negatives) on the HF
Trainer. Text→image recall@1 is measured on the held-out combinations (one fresh image each) before
and after training; chance is 1 / #held-out combinations.

    nice -n 5 .venv/bin/python benchmarks/visual_train.py [--per-combo 12] [--epochs 6] [--train-text-tower]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_table, write_json  # noqa: E402

SHAPES = ["circle", "square", "triangle", "cross"]
COLOURS = {"red": (230, 40, 40), "green": (40, 200, 60), "blue": (50, 80, 240), "yellow": (230, 220, 40),
           "purple": (170, 60, 200)}  # fmt: skip
POSITIONS = ["left", "right", "top", "bottom"]
SIZE = 48


def combos() -> tuple[list[tuple[int, int, int]], list[tuple[int, int, int]]]:
    """(train, held-out) combinations of (shape, colour, position) indices."""
    every = [(s, c, p) for s in range(len(SHAPES)) for c in range(len(COLOURS)) for p in range(len(POSITIONS))]
    held = [x for x in every if sum(x) % 4 == 0]
    return [x for x in every if x not in held], held


def caption(combo: tuple[int, int, int]) -> str:
    s, c, p = combo
    return f"{list(COLOURS)[c]} {SHAPES[s]} {POSITIONS[p]}"


def draw(combo: tuple[int, int, int], rng: random.Random) -> Image.Image:
    s, c, p = combo
    noise = np.random.default_rng(rng.randrange(1 << 30)).integers(0, 40, size=(SIZE, SIZE, 3), dtype=np.uint8)
    img = Image.fromarray(noise)
    d = ImageDraw.Draw(img)
    r = rng.randint(6, 9)
    cx = {"left": 12, "right": 36, "top": 24, "bottom": 24}[POSITIONS[p]] + rng.randint(-3, 3)
    cy = {"left": 24, "right": 24, "top": 12, "bottom": 36}[POSITIONS[p]] + rng.randint(-3, 3)
    col = tuple(min(255, max(0, v + rng.randint(-20, 20))) for v in list(COLOURS.values())[c])
    box = (cx - r, cy - r, cx + r, cy + r)
    if SHAPES[s] == "circle":
        d.ellipse(box, fill=col)
    elif SHAPES[s] == "square":
        d.rectangle(box, fill=col)
    elif SHAPES[s] == "triangle":
        d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=col)
    else:
        w = max(2, r // 3)
        d.rectangle((cx - r, cy - w, cx + r, cy + w), fill=col)
        d.rectangle((cx - w, cy - r, cx + w, cy + r), fill=col)
    return img


def build_text_model(folder: Path, seed: int) -> Path:
    """A tiny random BERT whose word-level vocabulary holds every caption word."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    words = sorted({w for x in SHAPES + list(COLOURS) + POSITIONS for w in x.split()})
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    tok = BertTokenizerFast.from_pretrained(str(folder), do_lower_case=True)
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=64)  # fmt: skip
    BertModel(cfg).eval().save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    return folder


def recall_at_1(model_dir: Path, held: list[tuple[int, int, int]], seed: int) -> float:
    from flagembed.inference.visual import VisualEmbedder

    emb = VisualEmbedder(model_dir, device="cpu")
    rng = random.Random(seed)
    images = [draw(x, rng) for x in held]
    q = emb.encode([caption(x) for x in held])
    c = emb.encode_images(images)
    hits = (q @ c.T).argmax(1) == np.arange(len(held))
    return float(hits.mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--per-combo", type=int, default=12, help="training images per training combination")
    ap.add_argument("--epochs", type=float, default=6.0)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--depth", type=int, default=2)
    ap.add_argument("--pooling", default="cls", choices=["cls", "mean"])
    ap.add_argument("--train-text-tower", action="store_true", help="also train BGE (the recipe freezes it)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a busy machine)")
    args = ap.parse_args()
    from flagembed.inference.visual import VisualEmbedder
    from flagembed.models.vision import EvaConfig
    from flagembed.train.config import EmbedderTrainingArguments
    from flagembed.train.visual import VisualArguments, finetune_visual
    from flagembed.train.visual_data import seed_everything

    seed_everything(args.seed)
    torch.set_num_threads(args.threads)
    train, held = combos()
    tmp = Path(tempfile.mkdtemp(prefix="visual_train_"))
    text = build_text_model(tmp / "bert", args.seed)
    tower = EvaConfig(image_size=SIZE, patch_size=8, width=32, depth=args.depth, heads=2, mlp_hidden=85, embed_dim=32)
    start_model = VisualEmbedder(text, vision=tower, pooling=args.pooling, device="cpu")
    start_model.model.visual.init_random(seed=args.seed)
    start = start_model.save_pretrained(tmp / "untrained")
    rng = random.Random(args.seed + 1)
    (tmp / "img").mkdir()
    rows = []
    for i, combo in enumerate(train * args.per_combo):
        path = tmp / "img" / f"{i}.png"
        draw(combo, rng).save(path)
        rows.append({"query": caption(combo), "pos": {"image": f"img/{i}.png"}})
    random.Random(args.seed + 2).shuffle(rows)
    data = tmp / "t2it.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    before = recall_at_1(start, held, args.seed + 3)
    targs = EmbedderTrainingArguments(
        output_dir=str(tmp / "trained"), per_device_train_batch_size=args.batch_size, num_train_epochs=args.epochs,
        learning_rate=args.lr, warmup_steps=10, lr_scheduler_type="cosine", logging_steps=20, save_strategy="no",
        report_to=[], use_cpu=True, loss_plot=False, seed=args.seed, dataloader_num_workers=0,
    )  # fmt: skip
    vargs = VisualArguments(model_name_or_path=str(start), train_data=[str(data)], task_type="t2it",
                            train_group_size=1, train_text_tower=args.train_text_tower)  # fmt: skip
    t0 = time.perf_counter()
    result = finetune_visual(vargs, targs)
    train_s = time.perf_counter() - t0
    after = recall_at_1(Path(result.output_dir), held, args.seed + 3)
    seen = recall_at_1(Path(result.output_dir), train, args.seed + 4)
    chance = 1.0 / len(held)
    rows_out = [
        ["untrained", f"{before:.3f}", f"{chance:.3f}", "-", "-"],
        ["trained (t2it)", f"{after:.3f}", f"{chance:.3f}", f"{seen:.3f}", f"{train_s:.0f}"],
    ]
    print(f"{len(rows)} training pairs over {len(train)} combinations; {len(held)} held-out combinations; "
          f"{result.global_step} steps; text tower {'trained' if args.train_text_tower else 'frozen'}")  # fmt: skip
    print_table(["model", "held-out text→image R@1", "chance", "train-combo R@1", "train s"], rows_out)
    path = write_json("visual_train", {
        "args": vars(args), "held_out_recall_at_1": {"untrained": before, "trained": after}, "chance": chance,
        "train_combo_recall_at_1": seen, "train_seconds": train_s, "steps": result.global_step,
        "final_loss": result.final_loss,
    })  # fmt: skip
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
