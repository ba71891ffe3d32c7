"""``flagembed index build`` and ``flagembed search``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from flagembed.cli.common import Device, DType, TrustRemoteCode, emit_table, fail

index_app = typer.Typer(help="Build retrieval indexes (dense, sparse, ColBERT).", no_args_is_help=True)


@index_app.command("build")
def build(
    model: str = typer.Option(..., "--model", "-m", help="Model name, hub id or local folder."),
    corpus: Path = typer.Option(..., "--corpus", help="JSONL with _id (or id), title, text."),
    out: Path = typer.Option(..., "--out", "-o", help="Index directory to write."),
    modes: Optional[str] = typer.Option(None, help="dense,sparse,colbert (default: all the model has)."),
    dense_kind: str = typer.Option("flat", help="flat (exact), hnsw or ivfpq."),
    batch_size: int = typer.Option(256, help="Items per batch."),
    device: Device = None,
    dtype: DType = "auto",
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bars while encoding."),
    trust_remote_code: TrustRemoteCode = False,
) -> None:
    """Encode a corpus and write a searchable index directory."""
    from flagembed.index.build import build_index

    try:
        searcher = build_index(
            model, corpus, out, modes=modes, dense_kind=dense_kind, show_progress=progress,
            batch_size=batch_size, device=device, dtype=dtype, trust_remote_code=trust_remote_code,
        )  # fmt: skip
    except (ValueError, TypeError, FileNotFoundError) as exc:
        fail(str(exc))
    typer.echo(f"indexed {len(searcher)} documents ({', '.join(searcher.modes)}) into {out}")


def search(
    directory: Path = typer.Argument(..., help="Index directory written by `flagembed index build`."),
    query: str = typer.Argument(..., help="Query text."),
    top_k: int = typer.Option(10, "--top-k", "-k", help="Hits to show."),
    modes: Optional[str] = typer.Option(None, help="Comma-separated modes to fuse (default: all in the index)."),
    weights: Optional[str] = typer.Option(None, help="Comma-separated weights, one per mode."),
    fusion: str = typer.Option("weighted", help="weighted or rrf."),
    device: Device = None,
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Search an index directory with one query and print the ranked hits."""
    from flagembed.index import HybridSearcher

    try:
        searcher = HybridSearcher.load(directory, device=device)
        res = searcher.search(query, top_k=top_k, modes=modes, weights=weights, fusion=fusion)  # type: ignore[arg-type]
    except (ValueError, TypeError, FileNotFoundError) as exc:
        fail(str(exc))
    hits = list(zip(res.ids[0], res.scores[0]))
    if as_json:
        typer.echo(json.dumps([{"rank": r, "id": i, "score": s} for r, (i, s) in enumerate(hits, 1)]))
        return
    emit_table(["rank", "id", "score"], [[str(r), i, f"{s:.4f}"] for r, (i, s) in enumerate(hits, 1)])
