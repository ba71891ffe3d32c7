"""End-to-end evaluation jobs used by the CLI: load models by name, evaluate, write results and a table."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from flagembed.evaluate.loaders import load_pairs, load_retrieval
from flagembed.evaluate.metrics import DEFAULT_K
from flagembed.evaluate.report import EvalResult, plot_curves, write_markdown, write_result
from flagembed.evaluate.retrieval import Mode, evaluate_retrieval
from flagembed.evaluate.sts import evaluate_sts

logger = logging.getLogger(__name__)

_RERANKER_CLASSES = {
    "reranker": "Reranker",
    "llm_reranker": "LLMReranker",
    "layerwise_reranker": "LayerwiseReranker",
    "lightweight_reranker": "LightweightReranker",
}


def load_embedder(name: str, *, m3: bool | None = None, **kwargs: Any) -> Any:
    """``Embedder`` (or ``M3Embedder`` for registry kind ``m3`` / ``m3=True``) with the model's registered settings."""
    import flagembed.inference as inference
    from flagembed.models import lookup

    spec = lookup(name)
    use_m3 = m3 if m3 is not None else bool(spec and spec.kind == "m3")
    return (inference.M3Embedder if use_m3 else inference.Embedder)(name, **kwargs)


def load_reranker(name: str, **kwargs: Any) -> Any:
    """The reranker class the registry names for ``name`` (cross-encoder by default)."""
    import flagembed.inference as inference
    from flagembed.models import lookup

    spec = lookup(name)
    cls = _RERANKER_CLASSES.get(spec.kind if spec else "reranker", "Reranker")
    return getattr(inference, cls)(name, **kwargs)


def retrieval_job(
    model: str,
    data: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    split: str = "test",
    modes: Sequence[Mode] = ("dense",),
    rerank: str | None = None,
    rerank_top_k: int = 100,
    search_top_k: int = 1000,
    k_values: Sequence[int] = DEFAULT_K,
    ignore_identical_ids: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
    plot: bool = False,
    embedder_kwargs: dict[str, Any] | None = None,
    reranker_kwargs: dict[str, Any] | None = None,
) -> list[EvalResult]:
    """Evaluate ``model`` (and optionally ``rerank``) on a retrieval folder; write JSON, markdown (and a PNG).

    Files: ``<output>/<model>/<reranker|NoReranker>/<dataset>-<split>.json`` (+ ``.search.json``),
    ``<output>/eval_results.md``, ``<output>/recall_at_k.png`` with ``plot``. Embeddings are cached under
    ``cache_dir`` (default ``<output>/embedding_cache``).
    """
    dataset = load_retrieval(data, split)
    needs_m3 = any(m != "dense" for m in modes)
    embedder = load_embedder(model, m3=True if needs_m3 else None, **(embedder_kwargs or {}))
    reranker = load_reranker(rerank, **(reranker_kwargs or {})) if rerank else None
    results = evaluate_retrieval(
        embedder,
        dataset,
        modes=modes,
        search_top_k=search_top_k,
        k_values=k_values,
        reranker=reranker,
        rerank_top_k=rerank_top_k,
        ignore_identical_ids=ignore_identical_ids,
        cache_dir=cache_dir if cache_dir is not None else Path(output) / "embedding_cache",
        model_name=model,
        reranker_name=rerank,
    )
    for r in results:
        write_result(r, output, search_results=True)
    ks = sorted(set(k_values))
    metrics = [m for m in (f"ndcg_at_{min(10, ks[-1])}", f"recall_at_{ks[-1]}") if m in results[0].metrics]
    write_markdown(results, Path(output) / "eval_results.md", metrics)
    if plot:
        plot_curves(results, Path(output) / "recall_at_k.png", "recall")
    return results


def sts_job(
    model: str,
    data: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    name: str | None = None,
    split: str = "test",
    cache_dir: str | os.PathLike[str] | None = None,
    embedder_kwargs: dict[str, Any] | None = None,
) -> EvalResult:
    """Evaluate ``model`` on a pair file or folder (STS); write the result JSON and a markdown table."""
    pairs = load_pairs(data, name=name)
    embedder = load_embedder(model, **(embedder_kwargs or {}))
    result = evaluate_sts(
        embedder,
        pairs,
        split=split,
        cache_dir=cache_dir if cache_dir is not None else Path(output) / "embedding_cache",
        model_name=model,
    )
    write_result(result, output)
    write_markdown([result], Path(output) / "eval_results.md", ["cosine_spearman", "cosine_pearson"])
    return result
