"""Shared CLI options and output helpers."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, NoReturn, Optional

import typer


def _check_devices(value: Optional[str]) -> Optional[Any]:
    """``--device``: one device, or several comma-separated (one worker each where supported)."""
    if value is None:
        return None
    from flagembed.engine.devices import check_device

    items = [v.strip() for v in value.split(",")]
    try:
        for item in items:
            check_device(item)
    except ValueError as exc:
        fail(f"--device: {exc}")
    return items if len(items) > 1 else items[0]


Device = Annotated[
    Optional[str],
    typer.Option(
        help="Device: cpu, cuda, cuda:N or mps; several comma-separated (default: first GPU, else CPU).",
        callback=_check_devices,
    ),
]
DType = Annotated[
    str, typer.Option(help="auto (CPU: bf16 with AMX/AVX512-BF16, fp32 for eval; GPU: half), fp32, fp16 or bf16.")
]
TrustRemoteCode = Annotated[
    bool,
    typer.Option(
        "--trust-remote-code",
        help="Allow the model repository's own Python code (config.json auto_map) to run; only for models you trust.",
    ),
]


def emit_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Print a plain aligned table."""
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(header)]
    typer.echo("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    typer.echo("  ".join("-" * w for w in widths))
    for row in rows:
        typer.echo("  ".join(c.ljust(w) for c, w in zip(row, widths)))


def fail(message: str, code: int = 2) -> NoReturn:
    """Print an error and exit non-zero."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def model_kwargs(device: Any, dtype: str, trust_remote_code: bool, **extra: Any) -> dict[str, Any]:
    """What a command passes to the models it loads (progress bars: auto)."""
    return {"device": device, "dtype": dtype, "show_progress": None, "trust_remote_code": trust_remote_code, **extra}


def hf_argv(
    extra: list[str], model: str | None, train_data: list[Path] | None, output: Path | None, trust_remote_code: bool
) -> list[str]:
    """The HfArgumentParser argv of a training command: its pass-through options plus our short spellings."""
    argv = list(extra)
    if model:
        argv += ["--model_name_or_path", model]
    if train_data:
        argv += ["--train_data", *[str(p) for p in train_data]]
    if output:
        argv += ["--output_dir", str(output)]
    if trust_remote_code:
        argv += ["--trust_remote_code", "True"]
    return argv
