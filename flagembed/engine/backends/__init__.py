"""Execution backends beyond eager torch: ONNX export (cached, optionally int8) and an onnxruntime runner."""

from flagembed.engine.backends.onnx_export import (
    QUANTIZE_CHOICES,
    ExportMismatchError,
    OnnxExport,
    Quantize,
    cache_root,
    export_onnx,
    export_options,
    is_export_folder,
    open_export_folder,
    read_manifest,
    require_onnx,
    source_fingerprint,
)
from flagembed.engine.backends.onnx_runtime import (
    ConfigOnlyBackbone,
    OnnxRunner,
    OpenVinoRunner,
    cpu_count,
    default_threads,
    export_backbone,
    load_onnx_runner,
    load_runner,
)

BACKENDS: tuple[str, ...] = ("torch", "onnx", "openvino")

__all__ = [
    "BACKENDS",
    "ConfigOnlyBackbone",
    "QUANTIZE_CHOICES",
    "ExportMismatchError",
    "OnnxExport",
    "OnnxRunner",
    "OpenVinoRunner",
    "Quantize",
    "cache_root",
    "cpu_count",
    "default_threads",
    "export_onnx",
    "export_backbone",
    "export_options",
    "is_export_folder",
    "load_onnx_runner",
    "load_runner",
    "open_export_folder",
    "read_manifest",
    "require_onnx",
    "source_fingerprint",
]
