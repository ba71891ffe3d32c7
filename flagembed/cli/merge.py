"""``flagembed merge``: LM-Cocktail model merging by weights or by a few examples."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import click
import typer
from typer.core import TyperCommand

from flagembed.cli.common import Device, TrustRemoteCode, emit_table, fail

VARIADIC = ("--models", "-m", "--weights", "-w")


def expand_variadic(args: list[str], names: tuple[str, ...] = VARIADIC) -> list[str]:
    """Rewrite ``--models A B C`` as ``--models A --models B --models C`` (negative numbers stay values)."""
    out: list[str] = []
    current: str | None = None
    for arg in args:
        if arg in names:
            current = arg
            out.append(arg)
            fresh = True
            continue
        if current is not None and not _is_option(arg):
            if not fresh:
                out.append(current)
            out.append(arg)
            fresh = False
            continue
        current = None
        out.append(arg)
    return out


def _is_option(arg: str) -> bool:
    if not arg.startswith("-") or arg == "-":
        return False
    try:
        float(arg)
    except ValueError:
        return True
    return False


class VariadicCommand(TyperCommand):
    """A command whose ``--models`` and ``--weights`` take several values after one flag."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, expand_variadic(list(args)))


def merge(
    models: list[str] = typer.Option(..., "--models", "-m", help="Models to merge (names, hub ids or folders)."),
    weights: Optional[list[float]] = typer.Option(None, "--weights", "-w", help="One weight per model, sum 1."),
    model_type: str = typer.Option("encoder", "--type", "-t", help="encoder, reranker or decoder."),
    out: Path = typer.Option(..., "--out", "--output", "-o", help="Folder to write the merged model to."),
    examples: Optional[Path] = typer.Option(None, help="JSONL few-shot examples: weights = softmax(-loss / T)."),
    temperature: float = typer.Option(5.0, help="T for --examples (lower: sharper weights)."),
    neg_number: int = typer.Option(7, help="Negatives per query for --examples (encoder, reranker)."),
    batch_size: int = typer.Option(2, help="Queries per contrastive group / items per pass for --examples."),
    max_length: int = typer.Option(2048, help="Max tokens per text for --examples."),
    by_layers: bool = typer.Option(False, "--by-layers", help="Stream tensor by tensor (low memory)."),
    allow_negative: bool = typer.Option(False, "--allow-negative", help="Accept negative weights."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a non-empty output folder."),
    device: Device = None,
    trust_remote_code: TrustRemoteCode = False,
) -> None:
    """Merge models (LM-Cocktail) by given weights, or by weights computed from a few examples."""
    from flagembed._io import check_output_dir, read_jsonl
    from flagembed.merge import mix_models, mix_models_by_layers, mix_models_with_data
    from flagembed.models import HubOptions

    if (weights is None) == (examples is None):
        fail("give exactly one of --weights or --examples")
    for i, w in enumerate(weights or []):  # checked here so the message names the CLI flags
        if w < 0 and not allow_negative:
            fail(f"--weights: weight {i} is {w}; weights must be >= 0 (pass --allow-negative to subtract)")
    try:
        check_output_dir(out, overwrite=overwrite, what="--out")
    except ValueError as exc:
        fail(str(exc))
    losses: list[Any] = [""] * len(models)
    code = {"hub": HubOptions(trust_remote_code=trust_remote_code), "trust_remote_code": trust_remote_code}
    try:
        if examples is not None:
            result = mix_models_with_data(
                models, model_type, list(read_jsonl(examples)), temperature, batch_size, max_length, neg_number, out,
                by_layers=by_layers, overwrite=overwrite, return_model=False, device=device, **code,
            )  # fmt: skip
            weights, losses = result.weights, [f"{x:.4f}" for x in result.losses]
        else:
            fn = mix_models_by_layers if by_layers else mix_models
            fn(
                models, model_type, weights, out,
                allow_negative=allow_negative, overwrite=overwrite, return_model=False, **code,
            )  # fmt: skip
    except (ValueError, TypeError, FileNotFoundError) as exc:
        fail(str(exc))
    emit_table(["model", "weight", "example loss"], [[m, f"{w:.4f}", x] for m, w, x in zip(models, weights, losses)])
    typer.echo(f"wrote {out}")
