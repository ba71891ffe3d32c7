"""``flagembed models``: list the registry."""

from __future__ import annotations

from typing import Optional

import typer

from flagembed.cli.common import emit_table


def models(kind: Optional[str] = typer.Option(None, help="Only this kind (embedder, m3, reranker, ...).")) -> None:
    """List known checkpoints with their pooling, instruction and max length."""
    from flagembed.models import list_models

    rows = [
        [m.name, m.kind, m.pooling or "", str(m.max_length), str(m.dim or ""), (m.query_instruction or "")[:40]]
        for m in list_models(kind)  # type: ignore[arg-type]
    ]
    emit_table(["name", "kind", "pooling", "max_len", "dim", "query instruction"], rows)
