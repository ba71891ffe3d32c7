"""End-to-end evaluation jobs used by the CLI: load models by name, evaluate, write results and a table."""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from flagembed._io import check_output_dir
from flagembed.engine.devices import reference_dtype
from flagembed.evaluate.loaders import load_pairs, load_retrieval
from flagembed.evaluate.metrics import DEFAULT_K
from flagembed.evaluate.report import EvalResult, plot_curves, write_report, write_result
from flagembed.evaluate.retrieval import (
    LEXICAL,
    Mode,
    check_m3_weights,
    check_rerank_weight,
    check_retrieval_args,
    evaluate_retrieval,
)
from flagembed.evaluate.sts import evaluate_sts

logger = logging.getLogger(__name__)

_RERANKER_CLASSES = {
    "reranker": "Reranker",
    "llm_reranker": "LLMReranker",
    "layerwise_reranker": "LayerwiseReranker",
    "lightweight_reranker": "LightweightReranker",
}


def model_label(name_or_path: str | os.PathLike[str]) -> str:
    """A stable name for results, whatever way the model was typed.

    A local folder is ``<folder name>-<8 hex digits of its absolute path>`` (``<run>_<checkpoint-N>`` for a
    ``checkpoint-*`` folder), so ``./models/x``, ``models/x/`` and ``/abs/models/x`` share results while two
    different folders named ``x`` never do. A name is the registry's hub id when the registry knows it
    (``all-MiniLM-L6-v2`` -> ``sentence-transformers/all-MiniLM-L6-v2``), else the name as typed.
    """
    from flagembed.models import lookup

    text = os.fspath(name_or_path)
    local = Path(text).expanduser()
    if local.is_dir():
        resolved = local.resolve()
        base = resolved.name
        if base.startswith("checkpoint-") and resolved.parent.name:
            base = f"{resolved.parent.name}_{base}"
        digest = hashlib.sha256(str(resolved).encode("utf-8")).hexdigest()[:8]
        return f"{base}-{digest}"
    spec = lookup(text)
    return spec.name if spec is not None else text.strip().rstrip("/")


def load_embedder(name: str, *, m3: bool | None = None, **kwargs: Any) -> Any:
    """``Embedder`` (or ``M3Embedder`` for registry kind ``m3`` / ``m3=True``) with the model's registered settings.

    ``dtype="auto"`` (the default) is fp32 on CPU here, not bf16: evaluation reproduces published fp32 scores.
    """
    import flagembed.inference as inference
    from flagembed.models import lookup

    kwargs["dtype"] = reference_dtype(kwargs.get("dtype"), kwargs.get("device"))
    spec = lookup(name)
    use_m3 = m3 if m3 is not None else bool(spec and spec.kind == "m3")
    return (inference.M3Embedder if use_m3 else inference.Embedder)(name, **kwargs)


def load_reranker(name: str, **kwargs: Any) -> Any:
    """The reranker class the registry names for ``name`` (cross-encoder by default; fp32 on CPU unless asked)."""
    import flagembed.inference as inference
    from flagembed.models import lookup

    kwargs["dtype"] = reference_dtype(kwargs.get("dtype"), kwargs.get("device"))
    spec = lookup(name)
    cls = _RERANKER_CLASSES.get(spec.kind if spec else "reranker", "Reranker")
    return getattr(inference, cls)(name, **kwargs)


def _reranker_label(rerank: str, weight: float) -> str:
    """The reranker's label, with the fusion weight when its scores are mixed with the retriever's."""
    return model_label(rerank) if weight == 1.0 else f"{model_label(rerank)}-fused-w{weight:g}"


def retrieval_job(
    model: str,
    data: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    split: str = "test",
    modes: Sequence[Mode] = ("dense",),
    rerank: str | None = None,
    rerank_top_k: int = 100,
    rerank_weight: float = 1.0,
    m3_weights: Any = None,
    search_top_k: int = 1000,
    k_values: Sequence[int] = DEFAULT_K,
    ignore_identical_ids: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
    plot: bool = False,
    embedder_kwargs: dict[str, Any] | None = None,
    reranker_kwargs: dict[str, Any] | None = None,
    store: str | None = None,
) -> list[EvalResult]:
    """Evaluate ``model`` (and optionally ``rerank``) on a retrieval folder; write JSON, markdown (and a PNG).

    Files: ``<output>/<model label>/<reranker label|NoReranker>/<dataset>-<split>.json`` (+ ``.search.json``;
    labels from :func:`model_label`; a fused reranker is labelled ``<label>-fused-w<weight>``),
    ``<output>/eval_results.md`` (regenerated from every result under ``output``), ``<output>/recall_at_k.png``
    with ``plot``. Embeddings are cached under ``cache_dir`` (default
    ``<output>/embedding_cache``). Arguments and data are checked before any model is loaded.
    """
    check_retrieval_args(modes, k_values, search_top_k, rerank_top_k if rerank else None)
    rerank_weight = check_rerank_weight(rerank_weight)
    m3_weights = check_m3_weights(m3_weights, modes)
    check_output_dir(output)
    if store is not None:
        from flagembed.index.milvus import parse_store

        parse_store(store)  # a malformed store fails before the model loads
    dataset = load_retrieval(data, split)
    needs_m3 = any(m != "dense" and m not in LEXICAL for m in modes)  # BM25 works with any embedder
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
        rerank_weight=rerank_weight,
        m3_weights=m3_weights,
        ignore_identical_ids=ignore_identical_ids,
        cache_dir=cache_dir if cache_dir is not None else Path(output) / "embedding_cache",
        model_name=model_label(model),
        reranker_name=_reranker_label(rerank, rerank_weight) if rerank else None,
        store=store,
    )
    for r in results:
        write_result(r, output, search_results=True)
    write_report(output)
    if plot:
        plot_curves(results, Path(output) / "recall_at_k.png", "recall")
    return results


def sts_job(
    model: str,
    data: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    name: str | None = None,
    split: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    embedder_kwargs: dict[str, Any] | None = None,
) -> EvalResult:
    """Evaluate ``model`` on a pair file or folder (STS); write the result JSON and regenerate the markdown report.

    ``split`` picks the folder's split file(s) (default ``test``, ``"all"`` for every file; see
    :func:`~flagembed.evaluate.load_pairs`); the result is labelled with what was read. The data is read
    before the model is loaded.
    """
    check_output_dir(output)
    pairs = load_pairs(data, name=name, split=split)
    embedder = load_embedder(model, **(embedder_kwargs or {}))
    result = evaluate_sts(
        embedder,
        pairs,
        cache_dir=cache_dir if cache_dir is not None else Path(output) / "embedding_cache",
        model_name=model_label(model),
    )
    write_result(result, output)
    write_report(output)
    return result
