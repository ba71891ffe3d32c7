"""Run an exported backbone with onnxruntime on CPU: token ids in, last hidden states out."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flagembed.engine.backends.onnx_export import (
    OnnxExport,
    Quantize,
    export_onnx,
    is_export_folder,
    open_export_folder,
    read_manifest,
)
from flagembed.engine.hardware import default_threads

logger = logging.getLogger(__name__)


def cpu_count() -> int:
    """CPU cores this process may run on (affinity- and cgroup-aware where the OS says so)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


class OnnxRunner:
    """An onnxruntime CPU session over an exported backbone (see :func:`export_onnx`).

    Args:
        model_file: the ``.onnx`` graph.
        num_threads: intra-op threads (default :func:`default_threads`).
    """

    def __init__(self, model_file: str | os.PathLike[str], *, num_threads: int | None = None) -> None:
        import onnxruntime as ort

        threads = default_threads() if num_threads is None else int(num_threads)
        if threads < 1:
            raise ValueError(f"num_threads must be >= 1, got {num_threads}")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3  # onnxruntime's own warnings are noise for users
        self.model_file = Path(model_file)
        self.num_threads = threads
        self.session = ort.InferenceSession(str(model_file), opts, providers=["CPUExecutionProvider"])
        names = [i.name for i in self.session.get_inputs()]
        if names != ["input_ids", "attention_mask"]:
            raise ValueError(f"{model_file} takes inputs {names}; expected ['input_ids', 'attention_mask']")

    def hidden_states(
        self, input_ids: torch.Tensor | np.ndarray, attention_mask: torch.Tensor | np.ndarray
    ) -> np.ndarray:
        """Last-layer token states ``(B, L, H)`` as float32 numpy."""
        feeds = {"input_ids": _int64(input_ids), "attention_mask": _int64(attention_mask)}
        return self.session.run(["last_hidden_state"], feeds)[0]

    def __repr__(self) -> str:
        return f"OnnxRunner({str(self.model_file)!r}, num_threads={self.num_threads})"


def _int64(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.ascontiguousarray(x, dtype=np.int64)


def load_onnx_runner(
    model_dir: str | os.PathLike[str],
    *,
    quantize: Quantize | None = None,
    num_threads: int | None = None,
    revision: str | None = None,
    trust_remote_code: bool = False,
) -> tuple[OnnxRunner, OnnxExport]:
    """Export the checkpoint (or reuse its fresh cached export) and open an onnxruntime session on it.

    ``model_dir`` may also be an export folder itself (``flagembed export --out``): it is opened as is.
    """
    if is_export_folder(model_dir):
        export = open_export_folder(model_dir, quantize)
    else:
        export = export_onnx(model_dir, quantize=quantize, revision=revision, trust_remote_code=trust_remote_code)
    return OnnxRunner(export.model_file, num_threads=num_threads), export


class ConfigOnlyBackbone(torch.nn.Module):
    """Stands in for the torch backbone of an export folder: the graph runs in ONNX, pooling needs only the config."""

    def __init__(self, config: Any) -> None:
        super().__init__()
        self.config = config

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Never called: an export folder has no torch weights."""
        raise NotImplementedError("this model is an ONNX export folder: it runs with backend='onnx' only")


def export_backbone(folder: str | os.PathLike[str], backend: str, trust_remote_code: bool = False) -> torch.nn.Module:
    """The stand-in backbone (config only) for an export folder opened with an ONNX backend.

    Raises:
        ValueError: ``backend="torch"``: an export folder has no torch weights.
    """
    if backend == "torch":
        raise ValueError(
            f"{folder} is an ONNX export folder (no torch weights): load it with backend='onnx' "
            "(backend='openvino' for an OpenVINO int8 export), "
            "or load the original checkpoint"
        )
    from transformers import AutoConfig

    return ConfigOnlyBackbone(AutoConfig.from_pretrained(str(folder), trust_remote_code=trust_remote_code)).eval()


class OpenVinoRunner:
    """An OpenVINO CPU model compiled from the ONNX export (fp32), or an NNCF static int8 IR.

    Args:
        model_file: the ``.onnx`` graph or the int8 ``.xml`` IR.
        num_threads: inference threads (default :func:`default_threads`).
        precision_hint: OpenVINO's ``INFERENCE_PRECISION_HINT`` for ops that are not int8: ``f32`` (the default
            for fp32 graphs, exact) or ``bf16`` (the default for int8 IRs: faster on AMX/AVX512-BF16 CPUs).
    """

    def __init__(
        self, model_file: str | os.PathLike[str], *, num_threads: int | None = None, precision_hint: str | None = None
    ) -> None:
        try:
            import openvino as ov
        except ImportError as exc:
            raise ImportError('backend="openvino" needs OpenVINO: pip install openvino') from exc
        from flagembed.engine.hardware import cpu_fast_bf16

        threads = default_threads() if num_threads is None else int(num_threads)
        if threads < 1:
            raise ValueError(f"num_threads must be >= 1, got {num_threads}")
        self.model_file = Path(model_file)
        self.num_threads = threads
        if precision_hint is None:
            int8 = self.model_file.suffix == ".xml"
            precision_hint = "bf16" if int8 and cpu_fast_bf16() else "f32"
        self.precision_hint = precision_hint
        config = {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": precision_hint}
        self.compiled = ov.Core().compile_model(str(model_file), "CPU", config)

    def hidden_states(
        self, input_ids: torch.Tensor | np.ndarray, attention_mask: torch.Tensor | np.ndarray
    ) -> np.ndarray:
        """Last-layer token states ``(B, L, H)`` as float32 numpy."""
        out = self.compiled({"input_ids": _int64(input_ids), "attention_mask": _int64(attention_mask)})
        return np.asarray(out[self.compiled.output(0)], dtype=np.float32)

    def __repr__(self) -> str:
        return f"OpenVinoRunner({str(self.model_file)!r}, num_threads={self.num_threads})"


def load_runner(
    backend: str,
    model_dir: str | os.PathLike[str],
    *,
    quantize: Quantize | None = None,
    num_threads: int | None = None,
    revision: str | None = None,
    trust_remote_code: bool = False,
    precision_hint: str | None = None,
) -> tuple[OnnxRunner | OpenVinoRunner, OnnxExport]:
    """A runner for ``backend`` ("onnx" or "openvino") over the checkpoint's cached ONNX export.

    ``quantize="int8"`` means onnxruntime's dynamic int8 with ``backend="onnx"`` and NNCF static int8 with
    ``backend="openvino"`` (calibrated once on bundled SciFact abstracts, then cached). ``precision_hint``
    (``f32``/``bf16``, OpenVINO only) is the precision of the ops that are not int8; see :class:`OpenVinoRunner`.

    Raises:
        ValueError: unknown backend, or an export folder that holds other weights than asked for.
    """
    if backend == "onnx":
        if is_export_folder(model_dir) and (read_manifest(model_dir) or {}).get("options", {}).get("runtime"):
            raise ValueError(f"{model_dir} is an OpenVINO int8 export; load it with backend='openvino'")
        return load_onnx_runner(
            model_dir,
            quantize=quantize,
            num_threads=num_threads,
            revision=revision,
            trust_remote_code=trust_remote_code,
        )
    if backend != "openvino":
        raise ValueError(f"unknown backend {backend!r}; valid: onnx, openvino")
    if is_export_folder(model_dir):
        export = open_export_folder(model_dir, quantize)
        opts = export.manifest.get("options") or {}
        if opts.get("quantize") and opts.get("runtime") != "openvino":
            raise ValueError(
                f"{export.path} is an onnxruntime int8 export; load it with backend='onnx' "
                "(OpenVINO int8 comes from `flagembed export --backend openvino --quantize int8`)"
            )
    else:
        export = export_onnx(
            model_dir, quantize=quantize, revision=revision, trust_remote_code=trust_remote_code,
            runtime="openvino" if quantize else "onnx",
        )  # fmt: skip
    return OpenVinoRunner(export.model_file, num_threads=num_threads, precision_hint=precision_hint), export
