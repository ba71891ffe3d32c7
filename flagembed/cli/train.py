"""``flagembed finetune embedder|reranker``, ``flagembed mine`` and ``flagembed score``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from flagembed.cli.common import Device, TrustRemoteCode, emit_table, fail, hf_argv

USAGE = "usage: flagembed finetune embedder --model MODEL --train-data FILE --output DIR [reference options]"

finetune_app = typer.Typer(help="Fine-tune models (reference argument names accepted).", no_args_is_help=True)


@finetune_app.command("embedder", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def finetune_embedder_cmd(
    ctx: typer.Context,
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model name, hub id or folder."),
    train_data: Optional[list[Path]] = typer.Option(None, "--train-data", help="jsonl file or folder (repeatable)."),
    output: Optional[Path] = typer.Option(
        None, "--output", "--out", "-o", help="Output folder (HF + sentence-transformers)."
    ),
    resume: Optional[str] = typer.Option(None, "--resume", help="Checkpoint folder to resume from, or 'latest'."),
    trust_remote_code: TrustRemoteCode = False,
) -> None:
    """Contrastive fine-tuning; other options are the reference's (e.g. --train_group_size 8 --temperature 0.02
    --learning_rate 1e-5 --num_train_epochs 1 --per_device_train_batch_size 32 --negatives_cross_device)."""
    from flagembed.train import finetune_embedder, parse_finetune_args

    if not (model or train_data or output or ctx.args):
        fail(f"nothing to train\n{USAGE}\nsee flagembed finetune embedder --help")
    argv = hf_argv(ctx.args, model, train_data, output, trust_remote_code)
    try:
        model_args, data_args, training_args = parse_finetune_args(argv)
        result = finetune_embedder(model_args, data_args, training_args, resume_from_checkpoint=_resume(resume))
    except (ValueError, TypeError, FileNotFoundError) as exc:
        fail(str(exc) if "required" not in str(exc) else f"{exc}\n{USAGE}\nsee flagembed finetune embedder --help")
    except SystemExit as exc:  # argparse's own exits (e.g. -h among the reference options)
        raise typer.Exit(0 if exc.code in (0, None) else 2) from None
    if os.environ.get("RANK", "0") != "0":  # under torchrun only the main process reports
        return
    typer.echo(f"trained {result.global_step} steps, mean loss {result.train_loss:.4f}; model in {result.output_dir}")
    if result.merged_dir:
        typer.echo(f"merged LoRA model in {result.merged_dir}")


@finetune_app.command("visual", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def finetune_visual_cmd(
    ctx: typer.Context,
    model: Optional[str] = typer.Option(None, "--model", "-m", help="VisualEmbedder folder (or BGE + --model_weight)."),
    train_data: Optional[list[Path]] = typer.Option(None, "--train-data", help="jsonl of query/pos/neg (repeatable)."),
    output: Optional[Path] = typer.Option(None, "--output", "--out", "-o", help="Output folder (VisualEmbedder)."),
    task_type: str = typer.Option("t2it", "--task-type", help="t2it (text → image+text) or edit_image."),
) -> None:
    """Visualized-BGE stage-2 training (InfoNCE, temperature 0.02, text tower frozen); other options are
    HF/reference ones, e.g. --train_group_size 2 --patch_dropout 0.5 --train_text_tower True --learning_rate 2e-5."""
    from flagembed.train.visual import finetune_visual, parse_visual_args

    argv = hf_argv([*ctx.args, "--task_type", task_type], model, train_data, output, False)
    try:
        args, training_args = parse_visual_args(argv)
        result = finetune_visual(args, training_args)
    except (ValueError, TypeError, FileNotFoundError) as exc:
        fail(str(exc))
    except SystemExit as exc:
        raise typer.Exit(0 if exc.code in (0, None) else 2) from None
    if os.environ.get("RANK", "0") == "0":
        steps, loss = result.global_step, result.train_loss
        typer.echo(f"trained {steps} steps, mean loss {loss:.4f}; model in {result.output_dir}")


def _resume(value: Optional[str]) -> str | bool | None:
    return True if value == "latest" else value


def mine(
    model: str = typer.Option(..., "--model", "-m", help="Embedder used for mining."),
    input_file: Path = typer.Option(..., "--input", "-i", help="Training jsonl ({query, pos, neg?})."),
    output_file: Path = typer.Option(..., "--output", "--out", "-o", help="Where to write the jsonl with mined neg."),
    candidate_pool: Optional[Path] = typer.Option(None, help="jsonl ({text}) or .txt of candidate passages."),
    range_for_sampling: str = typer.Option("10-210", help="Ranks to sample negatives from."),
    negative_number: int = typer.Option(15, help="Negatives per query."),
    query_instruction: Optional[str] = typer.Option(None, help="Query instruction (default: the model's)."),
    chunk_size: int = typer.Option(4096, help="Queries encoded and searched at a time (bounds memory)."),
    batch_size: int = typer.Option(256, help="Encoding batch size."),
    max_length: Optional[int] = typer.Option(None, help="Max tokens per text."),
    seed: int = typer.Option(42, help="Sampling seed."),
    progress: Optional[bool] = typer.Option(None, "--progress/--no-progress", help="Progress bar (default: auto)."),
    device: Device = None,
    trust_remote_code: TrustRemoteCode = False,
) -> None:
    """Mine hard negatives for a training file (the reference's hn_mine.py)."""
    from flagembed.train.mining import mine_file

    emb_kwargs = {"batch_size": batch_size, "device": device, "max_length": max_length, "show_progress": progress}
    emb_kwargs["trust_remote_code"] = trust_remote_code
    try:
        stats = mine_file(
            model,
            str(input_file),
            str(output_file),
            candidate_pool=str(candidate_pool) if candidate_pool else None,
            embedder_kwargs={k: v for k, v in emb_kwargs.items() if v is not None},
            range_for_sampling=range_for_sampling,
            negative_number=negative_number,
            query_instruction=query_instruction,
            chunk_size=chunk_size,
            seed=seed,
            show_progress=progress,
        )
    except (ValueError, TypeError, FileNotFoundError) as exc:
        fail(str(exc))
    emit_table(["stat", "value"], [[k, str(v)] for k, v in stats.as_dict().items()])
    typer.echo(f"wrote {output_file}")


def score(
    reranker: Optional[str] = typer.Option(None, "--reranker", "-r", help="Teacher reranker (name or folder)."),
    lm: Optional[str] = typer.Option(
        None, "--lm", help="Causal LM teacher (LLM-Embedder): score = -mean NLL of the record's answer given each key."
    ),
    input_file: Path = typer.Option(..., "--input", "-i", help="Training jsonl ({query, pos, neg})."),
    output_file: Path = typer.Option(..., "--output", "--out", "-o", help="Where to write the jsonl with scores."),
    model_class: Optional[str] = typer.Option(None, help="encoder-only-base, decoder-only-base, ... (unknown models)."),
    task: Optional[str] = typer.Option(
        None, help="--lm: prompt of qa, convsearch, icl, chat or lrlm (default: each record's 'task')."
    ),
    answer_field: str = typer.Option("answers", help="--lm: record field with the answers (the first is scored)."),
    key_max_tokens: int = typer.Option(512, min=1, help="--lm: tokens of each key kept in the prompt."),
    batch_size: Optional[int] = typer.Option(None, help="Scoring batch size."),
    max_length: Optional[int] = typer.Option(None, help="Max tokens per pair."),
    progress: Optional[bool] = typer.Option(None, "--progress/--no-progress", help="Progress bar (default: auto)."),
    device: Device = None,
    trust_remote_code: TrustRemoteCode = False,
) -> None:
    """Add teacher scores: a reranker's (add_reranker_score.py) or a causal LM's (LLM-Embedder's LM scoring)."""
    if (reranker is None) == (lm is None):
        fail("pass exactly one of --reranker and --lm")
    try:
        if lm is not None:
            from flagembed.train.lm_scoring import lm_score_file

            n = lm_score_file(
                lm, str(input_file), str(output_file), task=task, answer_field=answer_field,
                key_max_tokens=key_max_tokens, batch_size=batch_size or 8, device=device,
                trust_remote_code=trust_remote_code,
            )  # fmt: skip
            typer.echo(f"LM-scored {n} keys; wrote {output_file}")
            return
        from flagembed.train.teacher import score_file

        n = score_file(
            reranker,  # type: ignore[arg-type]
            str(input_file),
            str(output_file),
            model_class=model_class,
            reranker_kwargs={
                "device": device,
                "batch_size": batch_size,
                "max_length": max_length,
                "trust_remote_code": trust_remote_code,
            },
            show_progress=progress,
        )
    except (ValueError, TypeError, FileNotFoundError) as exc:
        fail(str(exc))
    typer.echo(f"scored {n} pairs; wrote {output_file}")


RERANKER_USAGE = (
    "usage: flagembed finetune reranker --model MODEL --model-type encoder|decoder|layerwise "
    "--train-data FILE --output DIR [reference options]"
)


@finetune_app.command("reranker", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def finetune_reranker_cmd(
    ctx: typer.Context,
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model name, hub id or folder."),
    model_type: Optional[str] = typer.Option(None, "--model-type", help="encoder, decoder or layerwise."),
    train_data: Optional[list[Path]] = typer.Option(None, "--train-data", help="jsonl file or folder (repeatable)."),
    output: Optional[Path] = typer.Option(None, "--output", "--out", "-o", help="Output folder."),
    calibration_ratio: Optional[float] = typer.Option(
        None, "--calibration-ratio", help="Hold out this share of queries to fit the normalize=True sigmoid."
    ),
    trust_remote_code: TrustRemoteCode = False,
) -> None:
    """Group-softmax reranker fine-tuning; other options are the reference's (e.g. --train_group_size 8
    --query_max_len 64 --passage_max_len 256 --knowledge_distillation True --start_layer 8 --learning_rate 6e-5)."""
    from flagembed.train import finetune_reranker, parse_reranker_args

    if not (model or train_data or output or ctx.args):
        fail(f"nothing to train\n{RERANKER_USAGE}\nsee flagembed finetune reranker --help")
    argv = hf_argv(ctx.args, model, train_data, output, trust_remote_code)
    if model_type is not None:
        argv += ["--model_type", str(model_type)]
    if calibration_ratio is not None:
        argv += ["--calibration_ratio", str(calibration_ratio)]
    try:
        model_args, data_args, training_args = parse_reranker_args(argv)
        result = finetune_reranker(model_args, data_args, training_args)
    except (ValueError, TypeError, FileNotFoundError) as exc:
        msg = str(exc)
        fail(msg if "required" not in msg else f"{msg}\n{RERANKER_USAGE}\nsee flagembed finetune reranker --help")
    except SystemExit as exc:
        raise typer.Exit(0 if exc.code in (0, None) else 2) from None
    if os.environ.get("RANK", "0") != "0":
        return
    typer.echo(f"trained {result.global_step} steps, mean loss {result.train_loss:.4f}; model in {result.model_dir}")
    if result.calibration:
        c = result.calibration
        typer.echo(
            f"calibration on {c['num_pairs']} held-out pairs: p = sigmoid({c['scale']:.4f} * score + {c['bias']:.4f}); "
            f"log loss {c['log_loss_plain_sigmoid']:.4f} -> {c['log_loss_calibrated']:.4f}"
        )
