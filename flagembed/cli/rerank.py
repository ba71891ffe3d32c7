"""``flagembed rerank``: score a file of documents against one query and print them best first."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from flagembed.cli.common import Device, DType, TrustRemoteCode, emit_table, fail

_KINDS = {
    "cross-encoder": "Reranker",
    "llm": "LLMReranker",
    "layerwise": "LayerwiseReranker",
    "lightweight": "LightweightReranker",
}
_REGISTRY_KIND = {"llm_reranker": "llm", "layerwise_reranker": "layerwise", "lightweight_reranker": "lightweight"}


def rerank(
    model: str = typer.Option(..., "--model", "-m", help="Reranker name, hub id or local folder."),
    query: str = typer.Option(..., "--query", "-q", help="The query."),
    docs: Path = typer.Option(..., "--docs", help="A .txt file (one document per line) or .jsonl."),
    top_k: Optional[int] = typer.Option(None, "--top-k", "-k", help="Show only the best k documents."),
    kind: Optional[str] = typer.Option(None, help="cross-encoder, llm, layerwise or lightweight (default: registry)."),
    normalize: bool = typer.Option(False, "--normalize", help="Sigmoid scores into (0, 1)."),
    max_length: int = typer.Option(512, help="Max tokens per (query, document) pair."),
    batch_size: int = typer.Option(128, help="Pairs per batch."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    device: Device = None,
    dtype: DType = "auto",
    trust_remote_code: TrustRemoteCode = False,
) -> None:
    """Rerank documents for a query with a cross-encoder or LLM reranker."""
    import flagembed.inference as inference
    from flagembed._io import read_texts
    from flagembed.models import lookup

    if not query.strip():
        fail("query is empty")
    if top_k is not None and top_k < 1:
        fail(f"top_k must be a positive integer (omit --top-k for all documents), got {top_k}")
    spec = lookup(model)
    chosen = kind or (_REGISTRY_KIND.get(spec.kind, "cross-encoder") if spec else "cross-encoder")
    if chosen not in _KINDS:
        fail(f"unknown --kind {chosen!r}; valid: {', '.join(_KINDS)}")
    try:
        documents = read_texts(docs)
        ranker = getattr(inference, _KINDS[chosen])(
            model,
            max_length=max_length,
            batch_size=batch_size,
            device=device,
            dtype=dtype,
            trust_remote_code=trust_remote_code,
        )
        results = ranker.rerank(query, documents, top_k=top_k, normalize=normalize)
    except (ValueError, TypeError, FileNotFoundError) as exc:
        fail(str(exc))
    if as_json:
        rows = [{"index": r.index, "score": r.score, "document": r.document} for r in results]
        typer.echo(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    text = [
        r.document if isinstance(r.document, str) else f"{r.document['title']} {r.document['text']}" for r in results
    ]
    emit_table(
        ["rank", "score", "index", "document"],
        [[str(i + 1), f"{r.score:.4f}", str(r.index), t[:100]] for i, (r, t) in enumerate(zip(results, text))],
    )
