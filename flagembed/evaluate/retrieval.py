"""Retrieval evaluation: embed corpus and queries, search an index, optionally rerank the top k, score.

Follows FlagEmbedding's pipeline (REFERENCE.md §4.2): documents are ``f"{title} {text}".strip()``, queries get
the model's query instruction, the corpus is searched exactly (faiss flat, inner product), a reranker rescores
each query's top ``rerank_top_k`` with one ``compute_score`` call and its scores replace the retrieval scores.
With ``rerank_weight < 1`` the two are fused instead (:func:`fuse_scores`): both are z-scored per query over the
reranked hits and mixed ``w * reranker + (1 - w) * retriever`` -- the usual guard when an in-domain reranker
trained on little data is not reliably better than the retriever it reranks.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from typing import Any, Literal, Protocol

import numpy as np

from flagembed.evaluate.cache import EmbeddingCache, cached_encode, model_config, texts_fingerprint
from flagembed.evaluate.loaders import RetrievalData
from flagembed.evaluate.metrics import DEFAULT_K, evaluate_run
from flagembed.evaluate.report import EvalResult

logger = logging.getLogger(__name__)

Mode = Literal["dense", "sparse", "colbert", "hybrid", "bm25", "dense+bm25", "dense+sparse"]
MODES: tuple[str, ...] = ("dense", "sparse", "colbert", "hybrid", "bm25", "dense+bm25", "dense+sparse")
M3_FUSED = {"hybrid": ["dense", "sparse", "colbert"], "dense+sparse": ["dense", "sparse"]}  # M3 weighted fusions
LEXICAL = ("bm25", "dense+bm25")  # any embedder: BM25 alone, or fused with the dense vectors
Run = dict[str, dict[str, float]]


class Scorer(Protocol):
    """Anything that scores (query, passage) pairs, e.g. ``flagembed.inference.Reranker``."""

    def compute_score(self, sentence_pairs: list[tuple[str, str]]) -> Any:
        """One relevance score per pair."""


def _dense(vectors: Any) -> np.ndarray:
    """Dense vectors from an embedder's output (an array, a tensor or an M3 dict with ``dense_vecs``)."""
    if hasattr(vectors, "dense") and not hasattr(vectors, "shape"):  # M3Output
        vectors = vectors.dense
    if isinstance(vectors, dict):
        if "dense_vecs" not in vectors:
            raise TypeError(f"encoder returned a dict without 'dense_vecs' (keys: {sorted(vectors)})")
        vectors = vectors["dense_vecs"]
    if hasattr(vectors, "detach"):
        vectors = vectors.detach().cpu().numpy()
    return np.ascontiguousarray(np.asarray(vectors, dtype=np.float32))


def encode_retrieval_data(
    model: Any,
    data: RetrievalData,
    *,
    cache: EmbeddingCache | None = None,
    show_progress: bool | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Query and corpus vectors (through the cache when given), in ``data.queries`` / ``data.corpus`` order.

    The corpus key ignores query-side settings (a new query instruction does not re-embed the corpus).
    """
    config = model_config(model)
    doc_texts, query_texts = data.doc_texts(), list(data.queries.values())
    kwargs = {} if show_progress is None else {"show_progress": show_progress}
    passage_side = {k: v for k, v in config.items() if not k.startswith("query_")}
    query_side = {k: v for k, v in config.items() if not k.startswith("passage_")}
    corpus = cached_encode(
        cache,
        {**passage_side, "side": "corpus", "texts": data.fingerprint()},
        lambda: _dense(model.encode_corpus(doc_texts, **kwargs)),
    )
    queries = cached_encode(
        cache,
        {**query_side, "side": "queries", "texts": texts_fingerprint(query_texts)},
        lambda: _dense(model.encode_queries(query_texts, **kwargs)),
    )
    return queries, corpus


def dense_search(
    query_vectors: np.ndarray,
    corpus_vectors: np.ndarray,
    query_ids: Sequence[str],
    doc_ids: Sequence[str],
    top_k: int,
    *,
    ignore_identical_ids: bool = False,
) -> Run:
    """Exact inner-product search with ``flagembed.index.DenseIndex`` (faiss flat) -> ``{qid: {docid: score}}``."""
    from flagembed.index import DenseIndex

    index = DenseIndex(corpus_vectors.shape[1], kind="flat")
    index.add(list(doc_ids), corpus_vectors)
    depth = min(top_k + (1 if ignore_identical_ids else 0), len(doc_ids))
    hits = index.search(query_vectors, top_k=max(depth, 1))
    run: Run = {}
    for qid, ids, scores in zip(query_ids, hits.ids, hits.scores):
        pairs = [(d, float(s)) for d, s in zip(ids, scores) if not (ignore_identical_ids and d == qid)]
        run[qid] = dict(pairs[:top_k])
    return run


def _zscore(values: np.ndarray) -> np.ndarray:
    std = values.std()
    return (values - values.mean()) / std if std > 0 else np.zeros_like(values)


def fuse_scores(rerank_scores: dict[str, float], retrieval_scores: dict[str, float], weight: float) -> dict[str, float]:
    """One query's fused scores: ``weight * z(rerank) + (1 - weight) * z(retrieval)`` over the same hits.

    z-scoring per query puts a cross-encoder's logits and an embedder's cosines on one scale (their raw ranges
    differ by orders of magnitude); ``weight = 1`` keeps the reranker's raw scores, ``0`` the retriever's.
    """
    if weight == 1.0 or not rerank_scores:
        return dict(rerank_scores)
    ids = list(rerank_scores)
    r = _zscore(np.array([rerank_scores[d] for d in ids], dtype=np.float64))
    b = _zscore(np.array([retrieval_scores[d] for d in ids], dtype=np.float64))
    return {d: float(s) for d, s in zip(ids, weight * r + (1.0 - weight) * b)}


def check_rerank_weight(weight: float) -> float:
    """``weight`` as a float in [0, 1], else a ValueError naming it."""
    weight = float(weight)
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"rerank_weight must be in [0, 1] (1: reranker scores only), got {weight}")
    return weight


def rerank_run(
    reranker: Scorer, run: Run, data: RetrievalData, top_k: int = 100, *, rerank_weight: float = 1.0
) -> Run:
    """Rescore each query's ``top_k`` hits with ``reranker`` in one ``compute_score`` call; keep only those.

    ``rerank_weight < 1`` fuses the reranker's and the retriever's scores per query (:func:`fuse_scores`).
    """
    if top_k < 1:
        raise ValueError(f"rerank_top_k must be >= 1, got {top_k}")
    rerank_weight = check_rerank_weight(rerank_weight)
    texts = dict(zip(data.corpus, data.doc_texts()))
    keys: list[tuple[str, str]] = []
    for qid, hits in run.items():
        best = sorted(hits.items(), key=lambda kv: -kv[1])[:top_k]
        keys.extend((qid, did) for did, _ in best)
    if not keys:
        return {qid: {} for qid in run}
    scores = reranker.compute_score([(data.queries[q], texts[d]) for q, d in keys])
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(scores) != len(keys):
        raise ValueError(f"reranker returned {len(scores)} scores for {len(keys)} pairs")
    out: Run = {qid: {} for qid in run}
    for (qid, did), s in zip(keys, scores):
        out[qid][did] = float(s)
    if rerank_weight < 1.0:
        out = {qid: fuse_scores(hits, run[qid], rerank_weight) for qid, hits in out.items()}
    return out


def m3_searcher(
    model: Any, data: RetrievalData, modes: Sequence[str], *, cache: EmbeddingCache | None = None,
    show_progress: bool | None = None,
) -> Any:  # fmt: skip
    """A HybridSearcher over ``data``'s corpus with every index the M3 ``modes`` need, from one encoding pass.

    With ``cache`` the searcher is saved there (key: the model's passage-side configuration and weights
    fingerprint, the indexes and the corpus fingerprint) and a later call with the same key loads it instead
    of encoding the corpus: evaluation reruns with other ``m3_weights``, or other queries over the same corpus.

    Raises:
        ValueError: ``model`` is not an ``M3Embedder``.
    """
    from flagembed.index import HybridSearcher
    from flagembed.inference import M3Embedder

    if not isinstance(model, M3Embedder):
        raise ValueError(
            f"modes {sorted(set(modes) - {'dense'})} need BGE-M3 outputs; got a {type(model).__name__} "
            "(use flagembed.inference.M3Embedder, or mode 'dense')"
        )
    needed = {part for m in modes for part in M3_FUSED.get(m, [m])} & {"dense", "sparse", "colbert"}
    order = [m for m in ("dense", "sparse", "colbert") if m in needed]

    def build() -> Any:
        return HybridSearcher.build(
            model, data.doc_texts(), data.doc_ids(), modes=order, show_progress=show_progress, store_docs=False
        )

    if cache is None:
        return build()
    from flagembed.index.identity import model_info

    passage_side = {k: v for k, v in model_config(model).items() if not k.startswith("query_")}
    identity = model_info(model)  # the weights' fingerprint: a model retrained in the same folder gets a new key
    key = {**passage_side, "identity": identity, "side": "corpus", "m3_indexes": order, "texts": data.fingerprint()}
    return cache.get_or_build(key, build, lambda s, folder: s.save(folder), lambda f: HybridSearcher.load(f, model))


def check_m3_weights(weights: Any, modes: Sequence[str]) -> dict[str, float] | None:
    """Weights of the fused M3 modes (``dense``, ``sparse``, ``colbert``; a mapping or "d,s,c"), checked for every
    fused mode in ``modes``; None keeps the searcher's defaults.

    Raises:
        ValueError: a malformed weight, or weights that give a fused mode in ``modes`` a zero sum.
    """
    if weights is None:
        return None
    from flagembed.index.options import check_weights

    full = check_weights(weights, ["dense", "sparse", "colbert"])
    for mode in modes:
        parts = M3_FUSED.get(mode)
        if parts and sum(full[p] for p in parts) <= 0:
            raise ValueError(f"m3 weights {full} give mode {mode!r} ({'+'.join(parts)}) a zero sum")
    return full


def _m3_search(
    searcher: Any, mode: str, data: RetrievalData, top_k: int, ignore_identical_ids: bool,
    weights: dict[str, float] | None = None,
) -> Run:  # fmt: skip
    modes = M3_FUSED.get(mode, [mode])
    depth = min(top_k + (1 if ignore_identical_ids else 0), len(data.corpus))
    w = {m: weights[m] for m in modes} if weights is not None and len(modes) > 1 else None
    hits = searcher.search(list(data.queries.values()), top_k=max(depth, 1), modes=modes, weights=w)
    run: Run = {}
    for qid, ids, scores in zip(data.queries, hits.ids, hits.scores):
        pairs = [(d, float(s)) for d, s in zip(ids, scores) if not (ignore_identical_ids and d == qid)]
        run[qid] = dict(pairs[:top_k])
    return run


def _store_runs(
    model: Any, data: RetrievalData, store: str, modes: Sequence[str], top_k: int, ignore_identical_ids: bool,
    cache: Any, progress: bool | None,
) -> dict[str, Run]:
    """Dense / sparse runs searched in a Milvus collection (filled from the corpus unless it already holds it).

    Raises:
        ValueError: a mode Milvus does not hold (ColBERT, hybrid, BM25), or a collection with other documents.
    """
    from flagembed.index.milvus import MilvusStore

    for m in modes:
        if m not in ("dense", "sparse"):
            raise ValueError(
                f"mode {m!r} cannot run on a Milvus store (it holds dense and sparse vectors; ColBERT and BM25 "
                "stay in process); use modes dense and/or sparse with --store"
            )
    wanted = [m for m in ("dense", "sparse") if m in modes]
    try:
        searcher = MilvusStore.open(store, model)
    except FileNotFoundError:
        searcher = None
    if searcher is not None and (len(searcher) != len(data.corpus) or not set(wanted) <= set(searcher.modes)):
        raise ValueError(
            f"Milvus store {store} holds {len(searcher)} documents ({', '.join(searcher.modes)}), not this corpus's "
            f"{len(data.corpus)} ({', '.join(wanted)}): use another collection (file.db#name) or drop this one"
        )
    dense_only = wanted == ["dense"]
    q = c = None
    if dense_only:  # through the embedding cache, like the in-process dense mode
        q, c = encode_retrieval_data(model, data, cache=cache, show_progress=progress)
    if searcher is None:
        searcher = MilvusStore.create(store, model, modes=wanted)
        if dense_only:
            searcher.add_encoded(data.doc_ids(), dense=c, docs=list(data.corpus.values()))
        else:
            searcher.add(data.doc_ids(), list(data.corpus.values()), show_progress=progress)
    try:
        depth = max(1, min(top_k + (1 if ignore_identical_ids else 0), len(data.corpus)))
        texts = list(data.queries.values())
        runs: dict[str, Run] = {}
        for m in wanted:
            if dense_only:
                from flagembed.inference import M3Output

                hits = searcher.search_encoded(M3Output(dense=q), top_k=depth, modes=[m])
            else:
                hits = searcher.search(texts, top_k=depth, modes=[m])
            run: Run = {}
            for qid, ids, scores in zip(data.queries, hits.ids, hits.scores):
                pairs = [(d, float(s)) for d, s in zip(ids, scores) if not (ignore_identical_ids and d == qid)]
                run[qid] = dict(pairs[:top_k])
            runs[m] = run
        return runs
    finally:
        searcher.close()


def check_retrieval_args(
    modes: Sequence[str], k_values: Sequence[int], search_top_k: int, rerank_top_k: int | None = None
) -> list[int]:
    """Validate retrieval arguments before any model is loaded; return the sorted distinct cutoffs.

    Raises:
        ValueError: an unknown mode (valid ones listed), a cutoff < 1, ``search_top_k`` < 1, a cutoff above
            ``search_top_k`` (recall@100 from 5 hits would be silently wrong: raise the top-k or lower the k),
            or every cutoff above ``rerank_top_k`` (reranked results get metrics only at k <= rerank_top_k).
    """
    if not modes:
        raise ValueError(f"no retrieval mode given; valid: {', '.join(MODES)}")
    for i, m in enumerate(modes):
        if m not in MODES:
            raise ValueError(f"modes[{i}] = {m!r} is unknown; valid: {', '.join(MODES)}")
    ks = sorted({int(k) for k in k_values})
    if not ks:
        raise ValueError("k_values is empty; give at least one cutoff, e.g. 1,10,100")
    if ks[0] < 1:
        raise ValueError(f"k_values has {ks[0]}: every k must be >= 1")
    if search_top_k < 1:
        raise ValueError(f"search_top_k must be >= 1, got {search_top_k}")
    if ks[-1] > search_top_k:
        raise ValueError(
            f"k = {ks[-1]} exceeds search_top_k = {search_top_k}: metrics at {ks[-1]} would be computed from "
            f"{search_top_k} hits; raise search_top_k to >= {ks[-1]} or drop the larger k values"
        )
    if rerank_top_k is not None and rerank_top_k < 1:
        raise ValueError(f"rerank_top_k must be >= 1, got {rerank_top_k}")
    if rerank_top_k is not None and ks[0] > rerank_top_k:
        raise ValueError(f"every k exceeds rerank_top_k = {rerank_top_k}: reranked results would have no metrics")
    return ks


def main_k(k_values: Sequence[int]) -> int:
    """The main score's cutoff: 10 (MTEB's ndcg_at_10) when asked, else the largest k below 10, else the smallest."""
    ks = sorted(set(k_values))
    below = [k for k in ks if k <= 10]
    return below[-1] if below else ks[0]


def summary_metrics(k_values: Sequence[int]) -> list[str]:
    """Metrics for tables: ndcg and mrr at :func:`main_k`, recall there and at every larger asked k."""
    ks, k0 = sorted(set(k_values)), main_k(k_values)
    return [f"ndcg_at_{k0}", f"mrr_at_{k0}", *(f"recall_at_{k}" for k in ks if k >= k0)]


def _bm25_run(
    model: Any, data: RetrievalData, mode: str, top_k: int, ignore_identical_ids: bool, cache: Any, progress: Any
) -> Run:
    """BM25 (``bm25``) or dense + BM25 weighted 0.4 / 0.2 (``dense+bm25``) over the corpus."""
    from flagembed.index import DenseIndex
    from flagembed.index.bm25 import BM25Index
    from flagembed.index.bm25_fusion import fuse_with_dense

    bm25 = BM25Index()
    bm25.add(data.doc_ids(), data.doc_texts())
    texts = list(data.queries.values())
    depth = max(1, min(top_k + (1 if ignore_identical_ids else 0), len(data.corpus)))
    if mode == "bm25":
        hits = bm25.search(texts, depth)
    else:
        q, c = encode_retrieval_data(model, data, cache=cache, show_progress=progress)
        dense = DenseIndex(c.shape[1], kind="flat")
        dense.add(data.doc_ids(), c)
        weights = {"dense": 0.4, "bm25": 0.2}
        hits = fuse_with_dense(dense, q, bm25, texts, depth, weights=weights, candidates=max(100, depth))
    run: Run = {}
    for qid, ids, scores in zip(data.queries, hits.ids, hits.scores):
        pairs = [(d, float(s)) for d, s in zip(ids, scores) if not (ignore_identical_ids and d == qid)]
        run[qid] = dict(pairs[:top_k])
    return run


def evaluate_retrieval(
    model: Any,
    data: RetrievalData,
    *,
    modes: Sequence[Mode] = ("dense",),
    search_top_k: int = 1000,
    k_values: Sequence[int] = DEFAULT_K,
    reranker: Scorer | None = None,
    rerank_top_k: int = 100,
    rerank_weight: float = 1.0,
    m3_weights: Any = None,
    ignore_identical_ids: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
    model_name: str | None = None,
    reranker_name: str | None = None,
    show_progress: bool | None = None,
    store: str | None = None,
) -> list[EvalResult]:
    """Evaluate ``model`` on one retrieval split, per mode, and again after reranking when ``reranker`` is given.

    Args:
        model: an embedder with ``encode_queries`` / ``encode_corpus`` (e.g. ``flagembed.Embedder``).
        data: a split from :func:`flagembed.evaluate.load_retrieval`.
        modes: retrieval modes; ``dense`` works with every embedder (beside other M3 modes, an ``M3Embedder``'s
            dense hits come from their single corpus pass); ``sparse``,
            ``colbert`` and ``hybrid`` (weighted dense 0.4 + sparse 0.2 + ColBERT 0.4) need an ``M3Embedder``.
        search_top_k: hits kept per query; must be >= every k (metrics at k need k hits).
        reranker: optional object with ``compute_score(pairs)``; reranks the top ``rerank_top_k``. The reranked
            results have metrics only at k <= ``rerank_top_k`` (their lists hold that many hits).
        rerank_weight: 1 (default, as the reference) ranks by the reranker's scores alone; below 1 the per-query
            z-scored reranker and retriever scores are mixed ``w * reranker + (1 - w) * retriever``.
        m3_weights: weights of ``dense``, ``sparse``, ``colbert`` in the fused M3 modes (``hybrid`` and
            ``dense+sparse`` use their parts), as a mapping or ``"0.4,0.2,0.4"``; None: 0.4 / 0.2 / 0.4.
        ignore_identical_ids: drop hits whose document id equals the query id (e.g. duplicate-question sets).
        cache_dir: embedding cache folder; reruns with the same configuration skip encoding (the M3 modes cache
            their searcher: see :func:`m3_searcher`).
        store: search a Milvus collection instead of the in-process indexes (``file.db[#name]`` for Milvus
            Lite, ``milvus://host:port/name`` for a server); dense and sparse modes only. An existing collection
            holding the corpus is reused, an absent one is created and filled.

    Returns:
        One :class:`EvalResult` per mode (plus one per mode with the reranker).

    Raises:
        ValueError: unknown mode, bad cutoffs (see :func:`check_retrieval_args`), or an M3 mode with a non-M3
            embedder.
    """
    ks = check_retrieval_args(modes, k_values, search_top_k, rerank_top_k if reranker is not None else None)
    rerank_weight = check_rerank_weight(rerank_weight)
    m3_weights = check_m3_weights(m3_weights, modes)
    cache = EmbeddingCache(cache_dir) if cache_dir is not None else None
    config = model_config(model)
    name = model_name or str(config.get("name") or type(model).__name__)
    args = {
        "search_top_k": search_top_k,
        "k_values": ks,
        "ignore_identical_ids": ignore_identical_ids,
        "corpus": data.fingerprint(),
        **({"m3_weights": m3_weights} if m3_weights is not None else {}),
    }
    results: list[EvalResult] = []
    m3_modes = [m for m in modes if m != "dense" and m not in LEXICAL]
    start = time.perf_counter()
    store_runs = _store_runs(model, data, store, modes, search_top_k, ignore_identical_ids, cache, show_progress) if (
        store is not None
    ) else {}
    searcher = None
    if m3_modes and store is None:  # one (cached) corpus pass for every M3 mode, dense included
        in_m3 = [m for m in modes if m not in LEXICAL]
        searcher = m3_searcher(model, data, in_m3, cache=cache, show_progress=show_progress)
    for mode in modes:
        if mode not in store_runs:
            start = time.perf_counter()
        if mode in store_runs:
            run = store_runs[mode]
        elif mode == "dense" and searcher is None:
            q, c = encode_retrieval_data(model, data, cache=cache, show_progress=show_progress)
            query_ids, doc_ids = list(data.queries), data.doc_ids()
            run = dense_search(q, c, query_ids, doc_ids, search_top_k, ignore_identical_ids=ignore_identical_ids)
        elif mode in LEXICAL:
            run = _bm25_run(model, data, mode, search_top_k, ignore_identical_ids, cache, show_progress)
        else:
            run = _m3_search(searcher, mode, data, search_top_k, ignore_identical_ids, m3_weights)
        retrieval_seconds = time.perf_counter() - start
        stages: list[tuple[str | None, Run, float]] = [(None, run, retrieval_seconds)]
        if reranker is not None:
            start = time.perf_counter()
            reranked = rerank_run(reranker, run, data, rerank_top_k, rerank_weight=rerank_weight)
            rname = reranker_name or _scorer_name(reranker)
            stages.append((rname, reranked, retrieval_seconds + time.perf_counter() - start))
        for rname, stage_run, seconds in stages:
            # reranked lists hold rerank_top_k hits: metrics at a larger k would repeat those at rerank_top_k
            stage_ks = ks if rname is None else [k for k in ks if k <= rerank_top_k]
            if len(stage_ks) < len(ks):
                logger.info("reranked results: no metrics at k > rerank_top_k = %d", rerank_top_k)
            scores = evaluate_run(data.qrels, stage_run, stage_ks)
            cfg = {"model": config, "eval": {**args, "mode": mode, **({"store": store} if store else {})}}
            if rname is not None:
                cfg["reranker"] = {"name": rname, "rerank_top_k": rerank_top_k, "rerank_weight": rerank_weight}
            results.append(
                EvalResult(
                    task="retrieval",
                    dataset=data.name,
                    split=data.split,
                    model=name,
                    reranker=rname,
                    mode=mode,
                    metrics=scores.scores,
                    main_score=f"ndcg_at_{main_k(stage_ks)}",
                    config=cfg,
                    per_query=scores.query_scores(),
                    stats={**data.stats, "cache_hits": cache.hits if cache else 0},
                    seconds=seconds,
                    search_results=stage_run,
                )
            )
    return results


def _scorer_name(reranker: Any) -> str:
    settings = getattr(reranker, "settings", None)
    return str(getattr(settings, "name", None) or getattr(reranker, "name", None) or type(reranker).__name__)
