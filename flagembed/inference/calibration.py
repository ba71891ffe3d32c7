"""Reranker score calibration: a stored sigmoid ``scale``/``bias`` so ``normalize=True`` gives probabilities.

Raw reranker scores are unbounded logits (FlagEmbedding issues #108, #1035): ``sigmoid(score)`` is only a
squashing, not a probability. A model folder may hold ``reranker_calibration.json`` (written by
``flagembed finetune reranker --calibration_ratio ...`` or :func:`flagembed.train.fit_calibration`):
``{"scale": a, "bias": b, "layers"?: {"<layer>": [a, b]}, ...}``. With it, ``normalize=True`` returns
``sigmoid(a * score + b)``: Platt scaling fitted on held-out labelled pairs. Without it, plain ``sigmoid``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

CALIBRATION_FILE = "reranker_calibration.json"


@dataclass(frozen=True)
class Calibration:
    """Platt scaling of raw scores: ``p = sigmoid(scale * score + bias)`` (per layer for layerwise models)."""

    scale: float = 1.0
    bias: float = 0.0
    layers: dict[int, tuple[float, float]] = field(default_factory=dict)

    def probabilities(self, scores: np.ndarray, layer: int | None = None) -> np.ndarray:
        """Calibrated probabilities of raw ``scores`` (float64); ``layer`` picks a layer's own fit if stored."""
        a, b = self.layers.get(layer, (self.scale, self.bias)) if layer is not None else (self.scale, self.bias)
        z = a * np.asarray(scores, dtype=np.float64) + b
        return 1.0 / (1.0 + np.exp(-z))


def load_calibration(folder: str | os.PathLike[str]) -> Calibration | None:
    """The calibration stored in a model folder, or ``None``.

    Raises:
        ValueError: the file exists but is not a valid calibration (names the file and the field).
    """
    path = Path(folder) / CALIBRATION_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc
    try:
        scale, bias = float(data["scale"]), float(data["bias"])
        layers = {int(k): (float(v[0]), float(v[1])) for k, v in (data.get("layers") or {}).items()}
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise ValueError(
            f"{path}: needs numeric 'scale' and 'bias' (and 'layers' as {{layer: [scale, bias]}})"
        ) from exc
    if not (np.isfinite(scale) and np.isfinite(bias)):
        raise ValueError(f"{path}: scale {scale} / bias {bias} must be finite")
    return Calibration(scale, bias, layers)
