"""A tiny random BGE-M3 checkpoint: the XLM-R backbone of tiny_models plus sparse/ColBERT head files."""

from __future__ import annotations

from pathlib import Path

import tiny_models
import torch


def build_m3(path: Path, seed: int = 0, colbert_dim: int = 24) -> Path:
    """XLM-R (hidden 32) + ``sparse_linear.pt`` (32→1) + ``colbert_linear.pt`` (32→colbert_dim)."""
    tiny_models.build_xlmr(path, seed=seed)
    gen = torch.Generator().manual_seed(seed + 1)
    sparse = {"weight": torch.randn(1, 32, generator=gen) * 0.5, "bias": torch.tensor([0.1])}
    colbert = {
        "weight": torch.randn(colbert_dim, 32, generator=gen) * 0.2,
        "bias": torch.randn(colbert_dim, generator=gen),
    }
    torch.save(sparse, path / "sparse_linear.pt")
    torch.save(colbert, path / "colbert_linear.pt")
    return path
