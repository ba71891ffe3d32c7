"""``flagembed eval cmteb``: C-MTEB on local folders (and through mteb where its data loads); prints the table.

Registered by ``flagembed/cli/eval.py`` as ``eval_app.command("cmteb")(cmteb)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from flagembed.cli.common import Device, DType, TrustRemoteCode, fail, model_kwargs

_ERRORS = (ValueError, TypeError, FileNotFoundError, NotImplementedError, ImportError)


def _split_list(text: Optional[str]) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def cmteb(
    model: str = typer.Option(..., "--model", "-m", help="Embedder name, hub id or local folder."),
    data: Optional[Path] = typer.Option(
        None, "--data", "-d", help="Folder laid out like ../shared/data (sts-zh/..., cmrc2018-retrieval)."
    ),
    output: Optional[Path] = typer.Option(
        None, "--output", "--out", "-o", help="Folder for results JSON/markdown/plot."
    ),
    tasks: str = typer.Option(
        "all", help="Comma-separated task names, or all (35), cmn-v1 (mteb's 31), local (what --data holds)."
    ),
    task_types: Optional[str] = typer.Option(None, "--task-types", help="Comma-separated, e.g. Retrieval,STS."),
    instruction: str = typer.Option(
        "model", help="Query instruction for retrieval/reranking tasks: model, cmteb, none, or the text itself."
    ),
    use_mteb: bool = typer.Option(True, "--mteb/--no-mteb", help="Run tasks without local data through mteb."),
    plot: bool = typer.Option(True, "--plot/--no-plot", help="Write cmteb.png beside the results."),
    batch_size: int = typer.Option(256, help="Texts per batch."),
    device: Device = None,
    dtype: DType = "auto",
    trust_remote_code: TrustRemoteCode = False,
) -> None:
    """C-MTEB scores (×100) with per-type averages as the C-MTEB README reports them."""
    from flagembed._io import check_output_dir
    from flagembed.evaluate.cmteb import run_cmteb, select_tasks
    from flagembed.evaluate.jobs import load_embedder

    try:
        names = tasks if tasks in ("all", "cmn-v1", "local") else _split_list(tasks)
        select_tasks(names, _split_list(task_types) or None)  # bad names fail before the model loads
        if data is not None and not data.is_dir():
            raise FileNotFoundError(f"--data {data} is not a folder")
        if output is not None:
            check_output_dir(output)
        embedder = load_embedder(model, **model_kwargs(device, dtype, trust_remote_code, batch_size=batch_size))
        report = run_cmteb(
            embedder,
            tasks=names,
            task_types=_split_list(task_types) or None,
            instruction=instruction,
            data_root=data,
            use_mteb=use_mteb,
            output_dir=output,
            plot=plot,
            model_name=model,
        )
    except _ERRORS as exc:
        fail(str(exc))
    typer.echo(report.markdown(), nl=False)
    if output is not None:
        typer.echo(f"results under {output}")
