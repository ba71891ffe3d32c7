"""Export a checkpoint's backbone to ONNX, optionally int8-quantize it, and cache the result atomically.

The exported graph maps ``(input_ids, attention_mask)`` to the last hidden states; pooling, heads and
normalization stay in :mod:`flagembed.models`, so every backend shares that math. An export folder holds
``model.onnx``, the checkpoint's small config/tokenizer files and ``manifest.json`` (written last). The
manifest records a fingerprint of the source weights and the export options: a folder whose fingerprint
or options differ is stale and is rebuilt, never reused.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from flagembed._io import save_json, staged_dir
from flagembed.engine.backends.openvino_int8 import OV_INT8_FILE, OV_INT8_OPTIONS, quantize_openvino_int8
from flagembed.engine.progress import progress_bar
from flagembed.models import TextEncoder, load_backbone

logger = logging.getLogger(__name__)

Quantize = Literal["int8"]
Runtime = Literal["onnx", "openvino"]
QUANTIZE_CHOICES: tuple[str, ...] = ("int8",)
EXPORT_FORMAT = 2  # bump when the exported graph or the manifest changes meaning
DEFAULT_OPSET = 18
MODEL_FILE = "model.onnx"
MANIFEST_FILE = "manifest.json"
# Files copied beside the graph so that an export folder describes itself (tokenizer, pooling, max length).
_SIDE_FILES = (
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "spiece.model",
    "sentencepiece.bpe.model",
    "modules.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
)
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
_EXTERNAL_DATA_BYTES = 1_800_000_000  # protobuf's 2 GB limit: larger graphs keep weights in a side file
# int8: per-channel weight scales on every MatMul with constant weights; per-tensor scales lose too
# much on MiniLM (cosine to fp32 ~0.93) and reduce_range loses more.
INT8_OPTIONS: dict[str, Any] = {"weight_type": "QInt8", "per_channel": True, "op_types": ["MatMul"]}


@dataclass(frozen=True)
class OnnxExport:
    """An export folder and its manifest; ``reused`` is True when a fresh cached export was found."""

    path: Path
    manifest: dict[str, Any]
    reused: bool

    @property
    def model_file(self) -> Path:
        """The graph inside the folder: ``model.onnx``, or ``model_int8.xml`` for an OpenVINO int8 export."""
        return self.path / _main_file(self.manifest)


def _main_file(manifest: dict[str, Any] | None) -> str:
    opts = (manifest or {}).get("options") or {}
    return OV_INT8_FILE if opts.get("runtime") == "openvino" and opts.get("quantize") else MODEL_FILE


def require_onnx() -> None:
    """Fail early with an install hint when onnx/onnxruntime are missing.

    Raises:
        ImportError: with the ``pip install`` line.
    """
    missing = [m for m in ("onnx", "onnxruntime", "onnxscript") if _find(m) is None]
    if missing:
        raise ImportError(f'the ONNX backend needs {", ".join(missing)}: pip install "flagembed[onnx]" onnxscript')


def _find(module: str) -> Any:
    import importlib.util

    return importlib.util.find_spec(module)


def cache_root() -> Path:
    """Where exports are cached: ``$FLAGEMBED_CACHE/onnx`` or ``~/.cache/flagembed/onnx``."""
    base = os.environ.get("FLAGEMBED_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "flagembed"
    )
    return Path(base) / "onnx"


def source_fingerprint(model_dir: str | os.PathLike[str], revision: str | None = None) -> str:
    """Hash of the checkpoint's config and weight files (name, size, mtime) and its revision.

    Any change to the weights (a new revision downloaded, a fine-tuned checkpoint saved over the old
    one) changes the fingerprint, which makes cached exports of the old weights stale.
    """
    root = Path(model_dir)
    h = hashlib.sha256(f"revision={revision}\n".encode())
    files = sorted(
        p for p in root.iterdir() if p.is_file() and (p.name == "config.json" or p.suffix in _WEIGHT_SUFFIXES)
    )
    if not any(p.suffix in _WEIGHT_SUFFIXES for p in files):
        raise FileNotFoundError(f"no weight files ({', '.join(_WEIGHT_SUFFIXES)}) in {root}")
    for p in files:
        st = p.stat()  # follows Hugging Face cache symlinks to the blobs
        h.update(f"{p.name}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def is_export_folder(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a complete flagembed ONNX export (``flagembed export --out``): manifest and graph."""
    folder = Path(path)
    return (folder / MANIFEST_FILE).is_file() and (
        (folder / MODEL_FILE).is_file() or (folder / OV_INT8_FILE).is_file()
    )


def open_export_folder(path: str | os.PathLike[str], quantize: Quantize | None = None) -> OnnxExport:
    """An existing export folder as an :class:`OnnxExport` (nothing is re-exported: the source may be gone).

    Raises:
        ValueError: no manifest, or ``quantize`` asks for other weights than the folder holds.
    """
    folder = Path(path).resolve()
    manifest = read_manifest(folder)
    if manifest is None or not (folder / _main_file(manifest)).is_file():
        raise ValueError(f"{folder} is not a flagembed ONNX export (no {MANIFEST_FILE} and {_main_file(manifest)})")
    held = (manifest.get("options") or {}).get("quantize")
    if quantize is not None and quantize != held:
        raise ValueError(f"the export {folder} holds {held or 'fp32'} weights, not quantize={quantize!r}")
    return OnnxExport(folder, manifest, reused=True)


def export_options(
    quantize: Quantize | None = None, opset: int = DEFAULT_OPSET, runtime: Runtime = "onnx"
) -> dict[str, Any]:
    """The options an export is keyed by (recorded in its manifest).

    ``runtime="openvino"`` with ``quantize="int8"`` means NNCF static int8 (an OpenVINO IR); otherwise the
    graph is ONNX (onnxruntime's dynamic int8 when quantized).

    Raises:
        ValueError: unknown ``quantize`` or ``runtime``.
    """
    if quantize is not None and quantize not in QUANTIZE_CHOICES:
        raise ValueError(f"unknown quantize {quantize!r}; valid: None, {', '.join(QUANTIZE_CHOICES)}")
    if runtime not in ("onnx", "openvino"):
        raise ValueError(f"unknown runtime {runtime!r}; valid: onnx, openvino")
    if runtime == "openvino" and quantize == "int8":
        return {
            "format": EXPORT_FORMAT,
            "output": "last_hidden_state",
            "attention": "eager",
            "opset": int(opset),
            "quantize": quantize,
            "runtime": "openvino",
            "quantization": dict(OV_INT8_OPTIONS),
        }
    return {
        "format": EXPORT_FORMAT,
        "output": "last_hidden_state",
        "attention": "eager",
        "opset": int(opset),
        "quantize": quantize,
        "quantization": dict(INT8_OPTIONS) if quantize == "int8" else None,
    }


def default_export_dir(model_dir: str | os.PathLike[str], options: dict[str, Any]) -> Path:
    """Cache folder for one model folder and one set of options."""
    model = Path(model_dir).resolve()
    where = hashlib.sha256(str(model).encode()).hexdigest()[:12]
    key = hashlib.sha256(json.dumps(options, sort_keys=True).encode()).hexdigest()[:12]
    variant = (options["quantize"] or "fp32") + ("-openvino" if options.get("runtime") == "openvino" else "")
    return cache_root() / f"{model.name}-{where}" / f"{variant}-{key}"


def read_manifest(folder: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The folder's manifest, or ``None`` when there is none (or it is unreadable)."""
    path = Path(folder) / MANIFEST_FILE
    if not path.is_file():
        return None
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError):
        logger.warning("unreadable export manifest %s; the export will be rebuilt", path)
        return None
    return data if isinstance(data, dict) else None


def is_fresh(folder: Path, manifest: dict[str, Any], fingerprint: str, options: dict[str, Any]) -> bool:
    """Whether ``folder`` holds a complete export of these weights with these options."""
    return (
        manifest.get("fingerprint") == fingerprint
        and manifest.get("options") == options
        and all((folder / name).is_file() for name in manifest.get("files", [_main_file(manifest)]))
    )


def export_onnx(
    model_dir: str | os.PathLike[str],
    *,
    out: str | os.PathLike[str] | None = None,
    quantize: Quantize | None = None,
    opset: int = DEFAULT_OPSET,
    revision: str | None = None,
    trust_remote_code: bool = False,
    force: bool = False,
    show_progress: bool | None = None,
    runtime: Runtime = "onnx",
    calibration_texts: Sequence[str] | None = None,
) -> OnnxExport:
    """Export (or reuse a fresh cached export of) a checkpoint folder's backbone as ONNX.

    Args:
        model_dir: a local checkpoint folder (see ``flagembed.models.resolve_model_path``).
        out: export folder; default: the cache (:func:`cache_root`), keyed by model folder and options.
        quantize: ``"int8"`` for dynamic int8 quantization (built from the cached fp32 export).
        opset: ONNX opset of the exported graph.
        revision: the checkpoint's revision, mixed into the fingerprint.
        force: rebuild even when a fresh export exists.
        show_progress: a bar over the export steps (``None``: when stderr is a terminal).
        runtime: ``"openvino"`` with ``quantize="int8"``: NNCF static int8 as an OpenVINO IR (the fastest int8
            path measured; see docs/cpu.md), calibrated on ``calibration_texts`` (default: bundled SciFact
            abstracts; a custom sample is not part of the cache key, so pass ``force=True`` or ``out``).

    Returns:
        The export folder with its manifest; ``reused`` says whether it came from the cache.

    Raises:
        ValueError: ``out`` is a file, or exists, is not empty and is not a flagembed export; or unknown
            ``quantize``. Checked before any export work.
        ExportMismatchError: the exported graph does not reproduce the torch model on a probe batch.
    """
    if out is not None and Path(out).exists() and not Path(out).is_dir():
        raise ValueError(f"out {os.fspath(out)!r} is a file; give a folder (an export is a folder)")
    require_onnx()
    source = Path(model_dir).resolve()
    options = export_options(quantize, opset, runtime)
    fingerprint = source_fingerprint(source, revision)
    target = Path(out).resolve() if out is not None else default_export_dir(source, options)
    manifest = read_manifest(target)
    if manifest is not None and not force and is_fresh(target, manifest, fingerprint, options):
        logger.info("reusing the ONNX export in %s", target)
        return OnnxExport(target, manifest, reused=True)
    if manifest is None and target.is_dir() and any(target.iterdir()):
        raise ValueError(f"{target} exists, is not empty and is not a flagembed ONNX export; choose another folder")
    if manifest is not None and not force:
        logger.warning("the ONNX export in %s is stale (weights or options changed); rebuilding it", target)
    steps = ["exporting the fp32 graph", "quantizing to int8"] if quantize == "int8" else ["exporting the graph"]
    with staged_dir(target) as tmp, progress_bar(
        len(steps) + 1, show_progress, f"ONNX export of {source.name}", unit="step", min_items=1
    ) as bar:
        bar.set_postfix_str(steps[0])
        if quantize == "int8":
            # into the cache when exporting to the cache; with ``out``, into the staging folder only
            scratch = None if out is None else tmp / "fp32"
            base = export_onnx(
                source, out=scratch, opset=opset, revision=revision, trust_remote_code=trust_remote_code,
                show_progress=False,
            )  # fmt: skip
            bar.update(1)
            bar.set_postfix_str(steps[1])
            if options.get("runtime") == "openvino":
                files = quantize_openvino_int8(base.model_file, tmp, source, calibration_texts)
            else:
                files = quantize_int8(base.model_file, tmp / MODEL_FILE)
            if scratch is not None:
                shutil.rmtree(scratch)
        else:
            files = _export_fp32(source, tmp / MODEL_FILE, opset, trust_remote_code)
        bar.update(1)
        bar.set_postfix_str("copying tokenizer and config files")
        for name in _SIDE_FILES:
            if (source / name).is_file():
                shutil.copy2(source / name, tmp / name)
        for module in ("1_Pooling", "2_Normalize"):
            if (source / module).is_dir():
                shutil.copytree(source / module, tmp / module)
        manifest = _manifest(source, fingerprint, options, revision, files)
        save_json(tmp / MANIFEST_FILE, manifest)  # written last: its presence marks a complete export
        bar.update(1)
    logger.info("wrote the ONNX export %s", target)
    return OnnxExport(target, manifest, reused=False)


class ExportMismatchError(RuntimeError):
    """The exported ONNX graph does not reproduce the torch model."""


class _HiddenStates(torch.nn.Module):
    """Graph to export: token ids and mask in, last hidden states out (through the shared TextEncoder)."""

    def __init__(self, encoder: TextEncoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.encoder.hidden_states(input_ids, attention_mask)


def _export_fp32(source: Path, dest: Path, opset: int, trust_remote_code: bool) -> list[str]:
    """torch.export-based ONNX export with dynamic batch and sequence axes, checked against torch."""
    # eager attention exports as MatMul/Add/Softmax; the SDPA export adds IsNaN/Where passes over every
    # (B, heads, L, L) score matrix that cost 10-20 % of CPU time and slow the int8 graph down most
    backbone = load_backbone(
        source, dtype=torch.float32, trust_remote_code=trust_remote_code, attn_implementation="eager"
    )
    module = _HiddenStates(TextEncoder(backbone)).eval()
    probe_ids, probe_mask = _probe(backbone.config)
    size = sum(p.numel() * p.element_size() for p in backbone.parameters())
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*axis name.*")  # the exporter's notes on named dims
        torch.onnx.export(
            module,
            (probe_ids, probe_mask),
            str(dest),
            input_names=["input_ids", "attention_mask"],
            output_names=["last_hidden_state"],
            dynamic_shapes={"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq}},
            opset_version=opset,
            dynamo=True,
            external_data=size > _EXTERNAL_DATA_BYTES,
            verbose=False,
        )
        expected = module(probe_ids, probe_mask).numpy()
    _check_against(dest, probe_ids.numpy(), probe_mask.numpy(), expected)
    return sorted(p.name for p in dest.parent.iterdir() if p.name.startswith(dest.name))


def _probe(config: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """A small padded batch of in-vocabulary ids (3 rows, 11 positions, ragged lengths)."""
    gen = torch.Generator().manual_seed(0)
    vocab = int(getattr(config, "vocab_size", 100))
    ids = torch.randint(min(5, vocab - 1), vocab, (3, 11), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    mask[2, 4:] = 0
    pad = getattr(config, "pad_token_id", None)
    ids[mask == 0] = int(pad) if isinstance(pad, int) and 0 <= pad < vocab else 0
    return ids, mask


def _check_against(model_file: Path, ids: np.ndarray, mask: np.ndarray, expected: np.ndarray) -> None:
    """Raise when onnxruntime's hidden states differ from torch's on the real (unmasked) positions."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(model_file), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
    real = mask.astype(bool)
    diff = float(np.abs(got[real] - expected[real]).max())
    scale = max(1.0, float(np.abs(expected[real]).max()))
    if diff > 1e-3 * scale:
        raise ExportMismatchError(
            f"the ONNX export of {model_file.parent} differs from torch by {diff:.2e} on a probe batch "
            f"(limit {1e-3 * scale:.1e}); this architecture does not export cleanly with torch.onnx"
        )


def quantize_int8(src: Path, dest: Path) -> list[str]:
    """Dynamic int8 quantization (int8 weights per channel, uint8 activations) with onnxruntime."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    external = (src.parent / f"{src.name}.data").is_file()
    root = logging.getLogger()
    root.addFilter(_quiet_quantizer)  # onnxruntime's quantizer logs advice on the root logger
    try:
        quantize_dynamic(
            str(src),
            str(dest),
            weight_type=getattr(QuantType, INT8_OPTIONS["weight_type"]),
            per_channel=INT8_OPTIONS["per_channel"],
            op_types_to_quantize=list(INT8_OPTIONS["op_types"]),
            use_external_data_format=external,
        )
    finally:
        root.removeFilter(_quiet_quantizer)
    return sorted(p.name for p in dest.parent.iterdir() if p.name.startswith(dest.name))


def _quiet_quantizer(record: logging.LogRecord) -> bool:
    """Drop onnxruntime's generic pre-processing advice and per-tensor notes (not actionable here)."""
    return record.levelno > logging.WARNING or "quantiz" not in record.getMessage().lower()


def _manifest(
    source: Path, fingerprint: str, options: dict[str, Any], revision: str | None, files: list[str]
) -> dict[str, Any]:
    import onnx
    import onnxruntime
    import transformers

    return {
        "source": str(source),
        "revision": revision,
        "fingerprint": fingerprint,
        "options": options,
        "files": files,
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__,
            **_openvino_versions(options),
        },
    }


def _openvino_versions(options: dict[str, Any]) -> dict[str, str]:
    if options.get("runtime") != "openvino":
        return {}
    import nncf
    import openvino

    return {"openvino": openvino.__version__, "nncf": nncf.__version__}
