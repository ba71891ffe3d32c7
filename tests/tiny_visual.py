"""Tiny Visualized-BGE pieces: a 64-px EVA tower (4x4 patches of 16 px) on the tiny BERT / XLM-R (hidden 32)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from flagembed.models.vision import EvaConfig

TINY_TOWER = EvaConfig(image_size=64, patch_size=16, width=32, depth=2, heads=2, mlp_hidden=85, embed_dim=24)


def build_visual(text_path: Path, out: Path, seed: int = 0) -> Path:
    """A saved VisualEmbedder folder: the tiny text checkpoint plus a random tiny tower."""
    from flagembed.inference.visual import VisualEmbedder

    model = VisualEmbedder(text_path, vision=TINY_TOWER)
    model.model.visual.init_random(seed=seed)
    return model.save_pretrained(out)


def draw(seed: int, size: tuple[int, int] = (80, 70)) -> Image.Image:
    """A random RGB picture (different per seed)."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8))
