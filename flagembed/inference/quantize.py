"""Quantized embedding outputs, compatible with sentence-transformers' ``quantize_embeddings``.

- ``int8`` / ``uint8``: per dimension, the range [min, max] of the calibration embeddings (default:
  the embeddings being quantized) is cut into 255 equal steps; ``uint8 = floor((x - min) / step)``,
  ``int8 = floor((x - min) / step - 128)``. Pass ``ranges`` (2 x dim) or ``calibration`` embeddings to
  quantize queries and corpus on one shared scale.
- ``binary`` / ``ubinary``: 1 bit per dimension (``x > 0``), packed 8 per byte; ``binary`` is the packed
  byte minus 128 as int8 (for faiss binary / Hamming search), ``ubinary`` the packed byte.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

Precision = Literal["float32", "int8", "uint8", "binary", "ubinary"]
PRECISIONS = ("float32", "int8", "uint8", "binary", "ubinary")


def quantize(
    embeddings: np.ndarray,
    precision: Precision,
    ranges: np.ndarray | None = None,
    calibration: np.ndarray | None = None,
) -> np.ndarray:
    """Quantize float embeddings (N, D) to ``precision``; see the module docstring for the formulas."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    emb = np.asarray(embeddings, dtype=np.float32)
    if precision == "float32":
        return emb
    if precision in ("binary", "ubinary"):
        packed = np.packbits(emb > 0, axis=-1)
        return (packed.astype(np.int16) - 128).astype(np.int8) if precision == "binary" else packed
    if ranges is None:
        ref = emb if calibration is None else np.asarray(calibration, dtype=np.float32)
        if ref.ndim != 2 or len(ref) < 2:
            raise ValueError(
                "int8/uint8 quantization needs ranges or at least 2 calibration embeddings "
                f"(got {len(ref) if ref.ndim == 2 else 1}); pass ranges= or calibration="
            )
        ranges = np.vstack([ref.min(axis=0), ref.max(axis=0)])
    ranges = np.asarray(ranges, dtype=np.float32)
    if ranges.shape != (2, emb.shape[-1]):
        raise ValueError(f"ranges must have shape (2, {emb.shape[-1]}), got {ranges.shape}")
    starts = ranges[0]
    steps = (ranges[1] - ranges[0]) / 255
    steps = np.where(steps == 0, 1.0, steps).astype(np.float32)
    buckets = np.clip(np.floor((emb - starts) / steps), 0, 255)
    if precision == "uint8":
        return buckets.astype(np.uint8)
    return (buckets - 128).astype(np.int8)
