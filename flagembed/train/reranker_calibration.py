"""Fit the sigmoid ``scale``/``bias`` of a reranker on held-out labelled pairs (Platt scaling).

The fit minimises the log loss of ``sigmoid(scale * score + bias)`` against Platt's smoothed 0/1 targets by
damped Newton steps (float64), so perfectly separated pairs still give a finite answer. The resulting
probability is calibrated *for the label mix it was fitted on*: held-out training groups have one positive
per several hard negatives, so ``p = 0.5`` means "as likely relevant as not among candidates like these".
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from flagembed._io import save_json
from flagembed.inference.calibration import CALIBRATION_FILE


def fit_sigmoid(scores: Sequence[float], labels: Sequence[int], ridge: float = 1e-6) -> tuple[float, float]:
    """``(scale, bias)`` minimising the log loss of ``sigmoid(scale * s + bias)`` (Platt scaling).

    Targets are Platt's smoothed labels ``(n+ + 1) / (n+ + 2)`` and ``1 / (n- + 2)``, so perfectly separated
    scores still give a finite fit; Newton steps are halved until the loss decreases.

    Raises:
        ValueError: lengths differ, labels are not 0/1, only one class is present, or a score is not finite.
    """
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    if len(s) != len(y):
        raise ValueError(f"{len(s)} scores but {len(y)} labels")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("labels must be 0 or 1")
    if y.min() == y.max():
        raise ValueError("calibration needs both relevant (1) and non-relevant (0) pairs")
    if not np.isfinite(s).all():
        raise ValueError("calibration scores must be finite")
    n_pos = y.sum()
    target = np.where(y > 0, (n_pos + 1) / (n_pos + 2), 1 / (len(y) - n_pos + 2))
    x = np.stack([s, np.ones_like(s)], axis=1)
    reg = np.diag([ridge, 0.0])

    def objective(w: np.ndarray) -> float:
        z = x @ w
        return float(np.mean(np.logaddexp(0, z) - target * z) + 0.5 * w @ reg @ w)

    w = np.array([1.0, 0.0])
    value = objective(w)
    for _ in range(200):
        p = 0.5 * (1 + np.tanh(0.5 * (x @ w)))  # overflow-free sigmoid
        grad = x.T @ (p - target) / len(y) + reg @ w
        hess = (x * (p * (1 - p))[:, None]).T @ x / len(y) + reg + 1e-12 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        t = 1.0
        while t > 1e-8 and objective(w - t * step) > value:
            t *= 0.5
        new = w - t * step
        new_value = objective(new)
        done = abs(value - new_value) < 1e-14 or np.abs(t * step).max() < 1e-10
        w, value = new, min(value, new_value)
        if done:
            break
    return float(w[0]), float(w[1])


def log_loss(probs: np.ndarray, labels: Sequence[int]) -> float:
    """Mean binary cross-entropy of probabilities (clipped away from 0 and 1)."""
    p = np.clip(np.asarray(probs, dtype=np.float64), 1e-12, 1 - 1e-12)
    y = np.asarray(labels, dtype=np.float64)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def fit_calibration(
    scores: Any, labels: Sequence[int], layers: Sequence[int] | None = None
) -> dict[str, Any]:
    """A calibration record from raw scores ``(N,)`` (or ``(N, len(layers))``, deepest layer last).

    The record has ``scale``/``bias`` (of the deepest layer for layerwise scores), ``layers`` when per-layer,
    and the fit's evidence: pair counts, log loss with plain and calibrated sigmoid.
    """
    s = np.asarray(scores, dtype=np.float64)
    cols = s.reshape(len(s), -1)
    fits = [fit_sigmoid(cols[:, j], labels) for j in range(cols.shape[1])]
    a, b = fits[-1]
    last = cols[:, -1]
    record: dict[str, Any] = {
        "scale": a,
        "bias": b,
        "num_pairs": int(len(last)),
        "num_relevant": int(np.sum(labels)),
        "log_loss_plain_sigmoid": log_loss(1 / (1 + np.exp(-last)), labels),
        "log_loss_calibrated": log_loss(1 / (1 + np.exp(-(a * last + b))), labels),
        "threshold_p50_raw_score": -b / a if a else None,
    }
    if layers is not None and len(layers) == cols.shape[1] and cols.shape[1] > 1:
        record["layers"] = {str(k): [fa, fb] for k, (fa, fb) in zip(layers, fits)}
    return record


def write_calibration(folder: str | os.PathLike[str], record: dict[str, Any]) -> Path:
    """Store a calibration record as ``reranker_calibration.json`` in a model folder (atomically)."""
    path = Path(folder) / CALIBRATION_FILE
    save_json(path, record)
    return path


def calibrate_on_examples(
    scorer: Any, collator: Any, examples: list[dict[str, Any]], data_args: Any, folders: Sequence[str]
) -> dict[str, Any]:
    """Score every pair of the held-out ``examples``, fit, and write the calibration into each of ``folders``."""
    from flagembed.train.reranker_data import labelled_pairs
    from flagembed.train.reranker_trainer import score_items

    items, labels = labelled_pairs(examples, data_args)
    scores = score_items(scorer, collator, items)
    record = fit_calibration(scores, labels, getattr(scorer, "layers", None) or None)
    for folder in folders:
        write_calibration(folder, record)
    return record
