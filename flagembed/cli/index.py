"""``flagembed index build`` and ``flagembed search``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Optional

import typer

from flagembed.cli.common import Device, DType, TrustRemoteCode, emit_table, fail

index_app = typer.Typer(help="Build retrieval indexes (dense, sparse, ColBERT).", no_args_is_help=True)


@index_app.command("build")
def build(
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model name, hub id or local folder."),
    corpus: Optional[Path] = typer.Option(
        None, "--corpus", help="JSONL with _id (or id), title, text (and, with a visual model, an optional image)."
    ),
    images: Optional[Path] = typer.Option(
        None, "--images", help="Folder of images to index with a Visualized-BGE model (ids = relative paths)."
    ),
    out: Optional[Path] = typer.Option(None, "--out", "--output", "-o", help="Index directory to write."),
    shards: Optional[Path] = typer.Option(
        None, "--shards", help="Build from the Parquet shards of `flagembed embed --ray` instead of encoding."
    ),
    store: Optional[str] = typer.Option(
        None, "--store", help="Write into Milvus instead of a directory: file.db[#name] or milvus://host:port/name."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing Milvus collection."),
    modes: Optional[str] = typer.Option(None, help="dense,sparse,colbert,bm25 (default: the model's modes, no bm25)."),
    dense_kind: str = typer.Option("flat", help="flat (exact), hnsw or ivfpq."),
    batch_size: int = typer.Option(256, help="Items per batch."),
    task: Optional[str] = typer.Option(
        None, help="LLM-Embedder task: qa, convsearch, chat, lrlm, icl or tool (its query and passage instructions)."
    ),
    device: Device = None,
    dtype: DType = "auto",
    progress: Optional[bool] = typer.Option(
        None, "--progress/--no-progress", help="Progress bars while encoding (default: auto)."
    ),
    trust_remote_code: TrustRemoteCode = False,
) -> None:
    """Encode a corpus (or read encoded shards) and write a searchable index directory or Milvus collection."""
    from flagembed.index.build import build_index
    from flagembed.models.vision.weights import is_visual_folder

    if images is not None or (model is not None and shards is None and is_visual_folder(model)):
        if model is None or out is None:
            fail("--images needs --model (a Visualized-BGE model) and --out (an index directory)")
        _build_visual(model, out, images, corpus, dense_kind, batch_size, device, dtype, progress, modes)
        return
    try:
        if (out is None) == (store is None):
            raise ValueError("give exactly one of --out (an index directory) and --store (a Milvus collection)")
        if shards is not None:
            if corpus is not None:
                raise ValueError("give --corpus (to encode) or --shards (already encoded), not both")
            n, modes_built = _from_shards(shards, out, store, overwrite, device, dense_kind, trust_remote_code)
        else:
            if model is None or corpus is None:
                raise ValueError("give --model and --corpus (or --shards from `flagembed embed --ray`)")
            kw = {"batch_size": batch_size, "device": device, "dtype": dtype, "trust_remote_code": trust_remote_code}
            if task:
                kw["task"] = task
            if store is not None:
                n, modes_built = _encode_into_store(model, corpus, store, modes, overwrite, progress, kw)
            else:
                searcher = build_index(model, corpus, out, modes=modes, dense_kind=dense_kind, show_progress=progress,
                                       **kw)  # type: ignore[arg-type]  # fmt: skip
                n, modes_built = len(searcher), searcher.modes
    except (ValueError, TypeError, OSError, ImportError) as exc:
        fail(str(exc))
    typer.echo(f"indexed {n} documents ({', '.join(modes_built)}) into {out or store}")


def _from_shards(shards: Path, out: Any, store: Any, overwrite: bool, device: Any, kind: str, remote: bool) -> Any:
    from flagembed.distributed.build import searcher_from_shards, store_from_shards

    if store is not None:
        with store_from_shards(shards, store, overwrite=overwrite, device=device, trust_remote_code=remote) as s:
            return len(s), s.modes
    searcher = searcher_from_shards(shards, dense_kind=kind, device=device, trust_remote_code=remote)
    searcher.save(out)
    return len(searcher), searcher.modes


def _encode_into_store(
    model: str, corpus: Path, store: str, modes: Any, overwrite: bool, progress: Any, kw: dict[str, Any]
) -> Any:
    from flagembed.index.build import load_embedder, read_corpus
    from flagembed.index.milvus import MilvusStore, parse_store

    parse_store(store)  # a malformed store fails before the model loads
    ids, docs = read_corpus(corpus)
    chosen = modes.split(",") if modes else None
    embedder = load_embedder(model, chosen, show_progress=progress, **kw)
    with MilvusStore.create(store, embedder, modes=chosen, overwrite=overwrite) as s:
        s.add(ids, docs, show_progress=progress)
        return len(s), s.modes


def _build_visual(
    model: str, out: Path, images: Path | None, corpus: Path | None, dense_kind: str, batch_size: int,
    device: Any, dtype: str, progress: bool | None, modes: str | None,
) -> None:  # fmt: skip
    """``index build --images``: a dense index of images (and/or image+text records) with a VisualEmbedder."""
    from flagembed.index.visual import build_visual_index

    if images is None and corpus is None:
        fail("give --corpus, --images, or both")
    if modes not in (None, "dense"):
        fail(f"--images builds a dense index only, got --modes {modes}")
    try:
        searcher = build_visual_index(
            model, out, images=images, corpus=corpus, dense_kind=dense_kind, show_progress=progress,
            image_batch_size=batch_size, device=device, dtype=dtype,
        )  # fmt: skip
    except (ValueError, TypeError, OSError) as exc:
        fail(str(exc))
    typer.echo(f"indexed {len(searcher)} documents (dense, images) into {out}")


def search(
    directory: str = typer.Argument(..., help="Index directory of `flagembed index build` (with --store: the query)."),
    query: Optional[str] = typer.Argument(None, help="Query text (optional with --image)."),
    image: Optional[Path] = typer.Option(None, "--image", help="Query image (index built with --images)."),
    store: Optional[str] = typer.Option(
        None, "--store", help="Search a Milvus collection instead: file.db[#name] or milvus://host:port/name."
    ),
    filter: str = typer.Option("", "--filter", help='Milvus filter expression, e.g. \'metadata["year"] > 2020\'.'),
    top_k: int = typer.Option(10, "--top-k", "-k", help="Hits to show."),
    modes: Optional[str] = typer.Option(None, help="Comma-separated modes to fuse (default: all in the index)."),
    weights: Optional[str] = typer.Option(None, help="Comma-separated weights, one per mode."),
    fusion: str = typer.Option("weighted", help="weighted or rrf."),
    device: Device = None,
    trust_remote_code: bool = typer.Option(
        False, "--trust-remote-code", help="Allow the index's model to run its own code (only if it was built so)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (with full documents) instead of a table."),
) -> None:
    """Search an index directory with one query and print the ranked hits with their documents."""
    from flagembed.index import HybridSearcher

    if store is not None and query is None:
        query = directory  # `flagembed search --store docs.db "query"`
    if query is None and image is None:
        fail("give a query: flagembed search INDEX_DIR QUERY (or flagembed search --store STORE QUERY)")
    if top_k < 1 or (image is None and not (query or "").strip()):  # refused before any model is loaded
        fail(f"top_k must be a positive integer, got {top_k}" if top_k < 1 else "queries[0] is empty")
    if filter and store is None:
        fail("--filter needs --store (filters run inside Milvus)")
    if image is not None and store is not None:
        fail("--image searches an index directory built with --images, not a Milvus store")
    if image is not None and not image.is_file():
        fail(f"query image {image} does not exist")
    try:
        kw = {"top_k": top_k, "modes": modes, "weights": weights, "fusion": fusion}
        if store is not None:
            from flagembed.index.milvus import MilvusStore, parse_store

            parse_store(store)
            with MilvusStore.open(store, device=device, trust_remote_code=trust_remote_code) as milvus:
                res = milvus.search(query, filter=filter, **kw)  # type: ignore[arg-type]
        else:
            searcher = HybridSearcher.load(Path(directory), device=device, trust_remote_code=trust_remote_code)
            if image is not None:
                from flagembed.index.visual import search_visual

                res = search_visual(searcher, text=query or None, image=str(image), top_k=top_k)
            else:
                res = searcher.search(query, **kw)  # type: ignore[arg-type]
    except (ValueError, TypeError, OSError, ImportError) as exc:
        fail(str(exc))
    empty = {"title": "", "text": "", "metadata": {}}
    docs = res.docs[0] if res.docs is not None else [empty] * len(res.ids[0])
    found = zip(res.ids[0], res.scores[0], docs)
    hits = [{"rank": r, "id": i, "score": s, **d} for r, (i, s, d) in enumerate(found, 1)]
    if as_json:
        typer.echo(json.dumps(hits, ensure_ascii=False))
    else:
        _print_hits(hits)


def _print_hits(hits: list[dict[str, Any]]) -> None:
    """rank, id, score, title and the text cut to what is left of the terminal's width."""
    head = ["rank", "id", "score", "title"]
    rows = [[str(h["rank"]), h["id"], f"{h['score']:.4f}", _cut(h["title"], 30)] for h in hits]
    used = sum(max([len(c)] + [len(r[i]) for r in rows]) + 2 for i, c in enumerate(head))
    room = max(20, shutil.get_terminal_size().columns - used)
    emit_table(head + ["text"], [r + [_cut(h["text"], room)] for r, h in zip(rows, hits)])


def _cut(text: str, width: int) -> str:
    """``text`` on one line, cut to ``width`` characters with an ellipsis."""
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"
