"""``flagembed eval retrieval|sts|mteb``: evaluate models, write results JSON under OUT, print a table (×100)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from flagembed.cli.common import Device, DType, TrustRemoteCode, emit_table, fail, model_kwargs

eval_app = typer.Typer(help="Evaluate embedders and rerankers (retrieval, STS, MTEB).", no_args_is_help=True)

# OSError covers unreadable files (permissions) and mteb's ConnectionError when a dataset cannot be fetched.
_ERRORS = (ValueError, TypeError, OSError, NotImplementedError, ImportError)


def _split_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _int_list(text: str, option: str) -> list[int]:
    out = []
    for t in _split_list(text):
        try:
            out.append(int(t))
        except ValueError:
            raise ValueError(f"{option}: {t!r} is not an integer (give e.g. 1,10,100)") from None
    return out


@eval_app.command("retrieval")
def retrieval(
    model: str = typer.Option(..., "--model", "-m", help="Embedder name, hub id or local folder."),
    data: Path = typer.Option(..., "--data", "-d", help="Retrieval folder (BEIR or FlagEmbedding layout)."),
    output: Path = typer.Option(..., "--output", "--out", "-o", help="Folder for results JSON, tables and the cache."),
    split: str = typer.Option("test", help="Qrels split to evaluate."),
    rerank: Optional[str] = typer.Option(None, "--rerank", "--reranker", help="Reranker to rescore the top hits with."),
    rerank_top_k: int = typer.Option(100, "--rerank-top-k", help="Hits per query to rerank."),
    rerank_weight: float = typer.Option(
        1.0,
        "--rerank-weight",
        help="1: rank by reranker scores alone; below 1: w*z(reranker) + (1-w)*z(retriever) per query.",
    ),
    modes: str = typer.Option(
        "dense", help="Comma-separated: dense, bm25, dense+bm25 (any model); M3: sparse, colbert, dense+sparse, hybrid."
    ),
    m3_weights: Optional[str] = typer.Option(
        None, "--m3-weights", help="Weights of dense,sparse,colbert in hybrid / dense+sparse (default 0.4,0.2,0.4)."
    ),
    search_top_k: int = typer.Option(1000, "--search-top-k", help="Hits kept per query (>= every k)."),
    k_values: str = typer.Option("1,3,5,10,100,1000", "--k-values", help="Comma-separated cutoffs (<= top-k)."),
    ignore_identical_ids: bool = typer.Option(False, "--ignore-identical-ids", help="Drop hits with id == query id."),
    batch_size: int = typer.Option(256, help="Texts per batch."),
    task: Optional[str] = typer.Option(
        None, help="LLM-Embedder task: qa, convsearch, chat, lrlm, icl or tool (its query and passage instructions)."
    ),
    plot: bool = typer.Option(False, "--plot", help="Also write recall@k curves as a PNG."),
    store: Optional[str] = typer.Option(
        None, "--store", help="Search Milvus instead of in-process indexes: file.db[#name] or milvus://host:port/name."
    ),
    cache_dir: Optional[Path] = typer.Option(
        None, "--cache-dir", help="Embedding cache (default <output>/embedding_cache); M3 modes cache their indexes."
    ),
    device: Device = None,
    dtype: DType = "auto",
    trust_remote_code: TrustRemoteCode = False,
) -> None:
    """Retrieval on a BEIR-layout folder, optionally reranked; the table shows metrics ×100 (JSON: fractions)."""
    from flagembed.evaluate import display
    from flagembed.evaluate.jobs import retrieval_job
    from flagembed.evaluate.retrieval import summary_metrics

    try:
        ks = _int_list(k_values, "--k-values")
        results = retrieval_job(
            model,
            data,
            output,
            split=split,
            modes=_split_list(modes),
            rerank=rerank,
            rerank_top_k=rerank_top_k,
            rerank_weight=rerank_weight,
            m3_weights=m3_weights,
            search_top_k=search_top_k,
            k_values=ks,
            ignore_identical_ids=ignore_identical_ids,
            plot=plot,
            embedder_kwargs=model_kwargs(
                device, dtype, trust_remote_code, batch_size=batch_size, **({"task": task} if task else {})
            ),
            reranker_kwargs=model_kwargs(device, dtype, trust_remote_code),
            store=store,
            cache_dir=cache_dir,
        )
    except _ERRORS as exc:
        fail(str(exc))
    keys = [k for k in summary_metrics(ks) if k in results[0].metrics]
    cells = [[display(r.metrics[k]) if k in r.metrics else "-" for k in keys] for r in results]  # "-": k > rerank top-k
    rows = [[f"{r.dataset}-{r.split}", r.mode or "", r.reranker or "-", *c] for r, c in zip(results, cells)]
    emit_table(["dataset", "mode", "reranker", *keys], rows)
    typer.echo(f"results under {output}")


@eval_app.command("sts")
def sts(
    model: str = typer.Option(..., "--model", "-m", help="Embedder name, hub id or local folder."),
    data: Path = typer.Option(..., "--data", "-d", help="Pair TSV/JSONL file, or a folder with one file per split."),
    output: Path = typer.Option(
        ..., "--output", "--out", "-o", help="Folder for the results JSON and eval_results.md."
    ),
    split: Optional[str] = typer.Option(
        None, help="Split file(s) of a folder: a name (default test), comma-separated names, or 'all'."
    ),
    name: Optional[str] = typer.Option(None, help="Dataset name in the results (default: file or folder name)."),
    batch_size: int = typer.Option(256, help="Texts per batch."),
    device: Device = None,
    dtype: DType = "auto",
    trust_remote_code: TrustRemoteCode = False,
) -> None:
    """STS: Spearman/Pearson correlation of cosine similarity with gold scores; the table shows them ×100."""
    from flagembed.evaluate import display
    from flagembed.evaluate.jobs import sts_job

    try:
        r = sts_job(
            model,
            data,
            output,
            name=name,
            split=split,
            embedder_kwargs=model_kwargs(device, dtype, trust_remote_code, batch_size=batch_size),
        )
    except _ERRORS as exc:
        fail(str(exc))
    keys = ["cosine_spearman", "cosine_pearson"]
    row = [r.dataset, r.split, str(r.stats["pairs"]), *(display(r.metrics[k]) for k in keys)]
    emit_table(["dataset", "split", "pairs", *keys], [row])
    typer.echo(f"results under {output}")


@eval_app.command("mteb")
def mteb(
    model: str = typer.Option(..., "--model", "-m", help="Embedder name, hub id or local folder."),
    tasks: Optional[str] = typer.Option(None, help="Comma-separated MTEB task names."),
    benchmark: Optional[str] = typer.Option(None, help="A named benchmark, e.g. C-MTEB or 'MTEB(eng, v2)'."),
    output: Optional[Path] = typer.Option(None, "--output", "--out", "-o", help="Folder for mteb's result files."),
    device: Device = None,
    dtype: DType = "auto",
    trust_remote_code: TrustRemoteCode = False,
) -> None:
    """Run MTEB / C-MTEB tasks through the mteb package (needs network for its datasets); main scores ×100."""
    from flagembed.evaluate import display
    from flagembed.evaluate.jobs import load_embedder
    from flagembed.evaluate.mteb_adapter import run_mteb, select_tasks

    try:
        if not tasks and not benchmark:
            raise ValueError("give --tasks or --benchmark")
        selected = select_tasks(_split_list(tasks or ""), benchmark)  # a typo fails before the model loads
        embedder = load_embedder(
            model, device=device, dtype=dtype, show_progress=None, trust_remote_code=trust_remote_code
        )
        scores = run_mteb(embedder, tasks=selected, output_dir=output)
    except _ERRORS as exc:
        fail(str(exc))
    emit_table(["task", "main_score"], [[t, display(s["main_score"])] for t, s in scores.items()])


from flagembed.cli.cmteb import cmteb  # noqa: E402

eval_app.command("cmteb")(cmteb)
