"""``flagembed export``: write a model's ONNX graph (optionally int8) to a folder or the export cache."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from flagembed.cli.common import TrustRemoteCode, fail


def export(
    model: str = typer.Option(..., "--model", "-m", help="Model name, hub id or local folder."),
    backend: str = typer.Option(
        "onnx", "--backend", help="onnx, or openvino (with --quantize int8: NNCF static int8, the fastest int8)."
    ),
    quantize: Optional[str] = typer.Option(
        None, "--quantize", help="int8: dynamic int8 (onnx) or static int8 calibrated on SciFact (openvino)."
    ),
    out: Optional[Path] = typer.Option(
        None, "--out", "--output", "-o", help="Export folder (default: the export cache)."
    ),
    opset: int = typer.Option(18, help="ONNX opset."),
    revision: Optional[str] = typer.Option(None, help="Model revision (hub models)."),
    force: bool = typer.Option(False, "--force", help="Rebuild even if a fresh export exists."),
    trust_remote_code: TrustRemoteCode = False,
    progress: Optional[bool] = typer.Option(None, "--progress/--no-progress", help="Progress bar (default: auto)."),
) -> None:
    """Export a model's backbone to ONNX, for Embedder(FOLDER, backend="onnx") or plain onnxruntime."""
    from flagembed.engine.backends import export_onnx
    from flagembed.models import open_checkpoint

    if backend not in ("onnx", "openvino"):
        fail(f"unknown backend {backend!r}; valid: onnx, openvino")
    if backend == "openvino" and quantize is None:
        fail("--backend openvino exports int8 only (give --quantize int8); fp32 OpenVINO runs the onnx export")
    if out is not None and out.exists() and not out.is_dir():
        fail(f"--out {str(out)!r} is a file; give a folder (an export is a folder)")
    try:
        ckpt = open_checkpoint(model, revision=revision, trust_remote_code=trust_remote_code)
        result = export_onnx(
            ckpt.path, out=out, quantize=quantize, opset=opset, revision=revision, force=force,  # type: ignore[arg-type]
            trust_remote_code=ckpt.trust_remote_code, show_progress=progress, runtime=backend,  # type: ignore[arg-type]
        )  # fmt: skip
    except (ValueError, TypeError, FileNotFoundError, ImportError) as exc:
        fail(str(exc))
    size = sum(f.stat().st_size for f in result.path.iterdir() if f.is_file()) / 1e6
    state = "reused fresh export" if result.reused else "exported"
    typer.echo(f"{state}: {result.model_file} ({quantize or 'fp32'}, {size:.1f} MB folder)")
