"""``flagembed pretrain retromae``: RetroMAE pre-training (reference argument names accepted)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from flagembed.cli.common import TrustRemoteCode, fail, hf_argv

USAGE = "usage: flagembed pretrain retromae --model MODEL --train-data FILE --output DIR [reference options]"

pretrain_app = typer.Typer(help="Pre-train encoders (reference argument names accepted).", no_args_is_help=True)


@pretrain_app.command("retromae", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def retromae_cmd(
    ctx: typer.Context,
    model: Optional[str] = typer.Option(None, "--model", "-m", help="MLM checkpoint (name, hub id or folder)."),
    train_data: Optional[list[Path]] = typer.Option(None, "--train-data", help="jsonl of {text} (repeatable)."),
    output: Optional[Path] = typer.Option(None, "--output", "--out", "-o", help="Output folder (gets encoder_model/)."),
    trust_remote_code: TrustRemoteCode = False,
) -> None:
    """RetroMAE; other options are the reference's and HF's (e.g. --max_seq_length 512
    --encoder_mlm_probability 0.3 --decoder_mlm_probability 0.5 --learning_rate 2e-5 --num_train_epochs 2)."""
    from flagembed.train.retromae import parse_retromae_args, pretrain_retromae

    if not (model or train_data or output or ctx.args):
        fail(f"nothing to train\n{USAGE}")
    argv = hf_argv(ctx.args, model, train_data, output, trust_remote_code)
    try:
        args, training_args = parse_retromae_args(argv)
        result = pretrain_retromae(args, training_args)
    except (ValueError, TypeError, FileNotFoundError) as exc:
        fail(str(exc) if "required" not in str(exc) else f"{exc}\n{USAGE}")
    except SystemExit as exc:
        raise typer.Exit(0 if exc.code in (0, None) else 2) from None
    typer.echo(f"trained {result.global_step} steps, mean loss {result.train_loss:.4f}")
    typer.echo(f"encoder in {result.encoder_dir}")
