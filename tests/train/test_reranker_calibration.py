"""Sigmoid calibration: the fit recovers a known logistic model; the stored file drives normalize=True."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from flagembed.inference.calibration import CALIBRATION_FILE, Calibration, load_calibration
from flagembed.train import fit_calibration, fit_sigmoid, write_calibration


def test_fit_sigmoid_recovers_scale_and_bias() -> None:
    rng = np.random.default_rng(0)
    scores = rng.normal(0, 3, 40_000)
    labels = (rng.random(len(scores)) < 1 / (1 + np.exp(-(0.7 * scores - 1.5)))).astype(int)
    a, b = fit_sigmoid(scores, labels)
    assert a == pytest.approx(0.7, abs=0.03) and b == pytest.approx(-1.5, abs=0.05)
    with pytest.raises(ValueError, match="both relevant"):
        fit_sigmoid([1.0, 2.0], [1, 1])
    with pytest.raises(ValueError, match="0 or 1"):
        fit_sigmoid([1.0, 2.0], [1, 2])


def test_separable_scores_give_a_finite_fit_and_a_better_log_loss() -> None:
    scores = np.array([5.0, 6.0, 7.0, -1.0, 0.0, 1.0, 2.0, 3.0])
    labels = [1, 1, 1, 0, 0, 0, 0, 0]
    record = fit_calibration(scores, labels)
    assert np.isfinite(record["scale"]) and np.isfinite(record["bias"])
    assert record["log_loss_calibrated"] < record["log_loss_plain_sigmoid"]
    assert 3.0 < record["threshold_p50_raw_score"] < 5.0  # p = 0.5 between the classes


def test_stored_calibration_round_trips_and_bad_files_fail(tmp_path: Path) -> None:
    scores = np.array([[0.0, 1.0], [1.0, 3.0], [-1.0, -2.0], [2.0, 4.0]])
    record = fit_calibration(scores, [0, 1, 0, 1], layers=[3, 4])
    write_calibration(tmp_path, record)
    cal = load_calibration(tmp_path)
    assert isinstance(cal, Calibration) and sorted(cal.layers) == [3, 4]
    a, b = record["layers"]["3"]
    assert cal.probabilities(np.array([0.5]), layer=3)[0] == pytest.approx(1 / (1 + np.exp(-(a * 0.5 + b))))
    assert (cal.scale, cal.bias) == (record["scale"], record["bias"])
    assert load_calibration(tmp_path / "none") is None
    (tmp_path / CALIBRATION_FILE).write_text(json.dumps({"scale": "x"}))
    with pytest.raises(ValueError, match="scale"):
        load_calibration(tmp_path)
