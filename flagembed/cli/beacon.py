"""``flagembed beacon train``: train Activation Beacon parameters of a stock Llama/Qwen2/Mistral model."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from flagembed.cli.common import fail

beacon_app = typer.Typer(help="Activation Beacon: train beacon parameters (base frozen).", no_args_is_help=True)


@beacon_app.command("train")
def beacon_train(
    model: str = typer.Option(..., "--model", "-m", help="Base or beacon checkpoint (folder or cached hub id)."),
    train_data: list[Path] = typer.Option(..., "--train-data", help="jsonl with 'text' or 'conversations' rows."),
    output: Path = typer.Option(..., "--output", "--out", "-o", help="Output folder (checkpoints and final model)."),
    window: int = typer.Option(1024, help="beacon_window W (raw tokens per window)."),
    stride: Optional[int] = typer.Option(None, help="beacon_stride S (default W)."),
    ratio: list[int] = typer.Option([2, 4, 8, 16, 32], "--ratio", help="Candidate ratios (repeatable)."),
    ratio_mix: str = typer.Option("step-random", help="step-random, instance-random, sequence, adapt-<int>."),
    pos: str = typer.Option("interleave", help="interleave or append."),
    attn: str = typer.Option("full-coverage", help="full-coverage or step-expansion (append only)."),
    sink_size: int = typer.Option(0, help="Attention-sink tokens kept forever (1 for Llama-3)."),
    param: list[str] = typer.Option(["q", "k", "v"], "--param", help="Projections with beacon copies."),
    min_length: Optional[int] = typer.Option(None, help="Drop shorter rows (default W + 1)."),
    max_length: int = typer.Option(20000, help="Truncate text rows / drop chat rows beyond this."),
    learning_rate: float = typer.Option(5e-5, "--lr", "--learning-rate"),
    epochs: float = typer.Option(1.0, "--epochs"),
    max_steps: int = typer.Option(-1, "--max-steps", help="Stop after this many steps (-1: epochs)."),
    gradient_checkpointing: bool = typer.Option(False, "--gradient-checkpointing"),
    save_steps: int = typer.Option(500, "--save-steps"),
    seed: int = typer.Option(42, "--seed"),
    bf16: bool = typer.Option(False, "--bf16"),
    resume: Optional[str] = typer.Option(None, "--resume", help="Checkpoint folder, or 'latest'."),
) -> None:
    """Train beacon embedding + q/k/v(/o) copies on long texts (LM loss) or chats (assistant-turn loss)."""
    from flagembed.longctx.beacon.train import BeaconTrainConfig, train_beacon

    try:
        cfg = BeaconTrainConfig(
            model=model,
            train_data=[str(p) for p in train_data],
            output_dir=str(output),
            window=window,
            stride=stride,
            ratio=tuple(ratio),
            ratio_mix=ratio_mix,
            pos=pos,
            attn=attn,
            sink_size=sink_size,
            param=tuple(param),
            min_length=min_length,
            max_length=max_length,
            learning_rate=learning_rate,
            num_train_epochs=epochs,
            max_steps=max_steps,
            gradient_checkpointing=gradient_checkpointing,
            save_steps=save_steps,
            seed=seed,
            bf16=bf16,
        )
        result = train_beacon(cfg, resume_from_checkpoint=True if resume == "latest" else resume)
    except (ValueError, TypeError, FileNotFoundError) as exc:
        fail(str(exc))
    typer.echo(f"trained {result.global_step} steps, mean loss {result.training_loss:.4f}; model in {output}")
