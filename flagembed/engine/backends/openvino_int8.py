"""OpenVINO int8: NNCF static quantization of the fp32 ONNX export, calibrated on a small in-domain text sample.

Static quantization fixes activation scales from calibration batches, so every MatMul (attention included)
runs in int8 on VNNI/AMX units, unlike onnxruntime's dynamic int8, which quantizes only weight MatMuls and
measures activation ranges at run time. The calibration sample defaults to the bundled SciFact abstracts
(``flagembed/data/scifact_sample.jsonl``); pass texts from your own corpus for out-of-domain models.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

OV_INT8_FILE = "model_int8.xml"  # beside it: model_int8.bin (weights)
# Recorded in the export manifest: a change here makes cached int8 exports stale.
OV_INT8_OPTIONS: dict[str, Any] = {
    "method": "nncf-static",
    "model_type": "transformer",
    "preset": "performance",
    "calibration": "bundled-scifact",
    "calibration_texts": 128,
    "calibration_batch": 8,
    "max_length": 256,
}


def bundled_calibration_texts(n: int = 128) -> list[str]:
    """The first ``n`` bundled SciFact abstracts (title + text), the default calibration sample."""
    lines = resources.files("flagembed").joinpath("data/scifact_sample.jsonl").read_text(encoding="utf-8")
    docs = [json.loads(x) for x in lines.splitlines() if x.strip()][:n]
    return [f"{d.get('title', '')} {d.get('text', '')}".strip() for d in docs]


def calibration_batches(
    tokenizer: Any, texts: Sequence[str], batch_size: int, max_length: int
) -> list[dict[str, np.ndarray]]:
    """Padded ``{"input_ids", "attention_mask"}`` int64 batches, length-sorted like the engine's batches."""
    if not texts:
        raise ValueError("the int8 calibration sample is empty; give at least one text")
    ordered = sorted(texts, key=len, reverse=True)
    out = []
    for start in range(0, len(ordered), batch_size):
        enc = tokenizer(
            list(ordered[start : start + batch_size]), padding=True, truncation=True, max_length=max_length,
            return_tensors="np",
        )  # fmt: skip
        out.append({k: np.asarray(enc[k], dtype=np.int64) for k in ("input_ids", "attention_mask")})
    return out


def require_nncf() -> None:
    """Raise a one-line install hint when OpenVINO or NNCF is missing."""
    import importlib.util

    missing = [m for m in ("openvino", "nncf") if importlib.util.find_spec(m) is None]
    if missing:
        raise ImportError(f'OpenVINO int8 needs {" and ".join(missing)}: pip install "flagembed[openvino]"')


def quantize_openvino_int8(
    onnx_file: Path, dest_dir: Path, tokenizer_dir: Path, texts: Sequence[str] | None = None
) -> list[str]:
    """Convert the fp32 ONNX graph to OpenVINO, quantize it statically with NNCF, save ``model_int8.xml``.

    Returns:
        The names of the files written into ``dest_dir``.
    """
    require_nncf()
    import nncf
    import openvino as ov

    from flagembed.models import load_tokenizer

    opts = OV_INT8_OPTIONS
    sample = list(texts) if texts is not None else bundled_calibration_texts(opts["calibration_texts"])
    batches = calibration_batches(load_tokenizer(tokenizer_dir), sample, opts["calibration_batch"], opts["max_length"])
    model = ov.convert_model(str(onnx_file))
    nncf_log = logging.getLogger("nncf")
    level = nncf_log.level
    nncf_log.setLevel(logging.WARNING)  # NNCF reports every statistics pass at INFO
    # NNCF draws rich progress bars on stdout (library code must not print): they go to a discarded buffer
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            quantized = nncf.quantize(
                model,
                nncf.Dataset(batches),
                model_type=nncf.ModelType.TRANSFORMER,
                preset=nncf.QuantizationPreset.PERFORMANCE,
                subset_size=len(batches),
            )
    finally:
        nncf_log.setLevel(level)
    ov.save_model(quantized, str(dest_dir / OV_INT8_FILE), compress_to_fp16=False)
    logger.info("quantized %s to OpenVINO int8 on %d calibration texts", onnx_file, len(sample))
    return sorted(p.name for p in dest_dir.iterdir() if p.name.startswith("model_int8."))
