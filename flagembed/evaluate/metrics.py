"""Ranking metrics (nDCG, MAP, Recall, Precision, MRR, capped recall) at k, vectorized, identical to pytrec_eval.

Ranking follows trec_eval exactly: documents sorted by score descending, ties broken by document id
descending (byte order). A document counts as relevant when its judgement is ``>= relevance_level``
(trec_eval's default 1); nDCG gains are the graded judgements (>0). MRR@k and capped recall follow BEIR.

Every metric is averaged over the same set of queries: the queries that have judgements. (FlagEmbedding
divides MRR and capped recall by the number of judged queries but the pytrec_eval metrics by the number of
queries in the run, REFERENCE.md §10.9; here a judged query missing from the run scores 0 everywhere.)
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

logger = logging.getLogger(__name__)

Metric = Literal["ndcg", "map", "recall", "precision", "mrr", "recall_cap"]
ALL_METRICS: tuple[Metric, ...] = ("ndcg", "map", "recall", "precision", "mrr", "recall_cap")
DEFAULT_K: tuple[int, ...] = (1, 3, 5, 10, 100, 1000)

Qrels = Mapping[str, Mapping[str, float]]
Run = Mapping[str, Mapping[str, float]]


@dataclass
class RankingScores:
    """Averages (``scores["ndcg_at_10"]``) and per-query values (arrays aligned with ``query_ids``)."""

    scores: dict[str, float]
    query_ids: list[str]
    per_query: dict[str, np.ndarray] = field(repr=False)
    skipped_run_queries: int = 0  # queries in the run without judgements (ignored)

    def query_scores(self) -> dict[str, dict[str, float]]:
        """Per-query metrics as ``{query_id: {metric_key: value}}`` (for reports)."""
        keys = list(self.per_query)
        table = np.stack([self.per_query[k] for k in keys], axis=1) if keys else np.zeros((len(self.query_ids), 0))
        return {qid: dict(zip(keys, map(float, row))) for qid, row in zip(self.query_ids, table)}


def metric_key(metric: str, k: int) -> str:
    """MTEB-style key, e.g. ``ndcg_at_10``."""
    return f"{metric}_at_{k}"


def _check_args(k_values: Sequence[int], metrics: Sequence[str]) -> tuple[list[int], list[str]]:
    ks = sorted({int(k) for k in k_values})
    for i, k in enumerate(ks):
        if k < 1:
            raise ValueError(f"k_values[{i}] = {k}: every k must be >= 1")
    if not ks:
        raise ValueError("k_values is empty; give at least one cutoff, e.g. (1, 10, 100)")
    for i, m in enumerate(metrics):
        if m not in ALL_METRICS:
            raise ValueError(f"metrics[{i}] = {m!r} is unknown; valid: {', '.join(ALL_METRICS)}")
    return ks, list(metrics)


def _flatten(
    index: Mapping[str, int], nested: Mapping[str, Mapping[str, float]], vocab: dict[str, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Query numbers, doc numbers (``vocab`` grows) and values of every entry whose query is in ``index``."""
    rows: list[int] = []
    docs: list[int] = []
    values: list[float] = []
    for qid, entries in nested.items():
        qi = index.get(qid)
        if qi is None or not entries:
            continue
        rows.extend([qi] * len(entries))
        docs.extend([vocab.setdefault(d, len(vocab)) for d in entries])
        values.extend(entries.values())
    return (
        np.asarray(rows, dtype=np.int64),
        np.asarray(docs, dtype=np.int64),
        np.asarray(values, dtype=np.float64),
    )


def _byte_order_ranks(vocab: dict[str, int]) -> np.ndarray:
    """Rank of each doc number when doc ids are sorted by code point (= UTF-8 byte order, as strcmp)."""
    ranks = np.empty(len(vocab), dtype=np.int64)
    ranks[[vocab[d] for d in sorted(vocab)]] = np.arange(len(vocab))
    return ranks


def _group_ranks(groups: np.ndarray) -> np.ndarray:
    """0-based position of each element within its run of equal (sorted) group numbers."""
    n = len(groups)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1]])
    lengths = np.diff(np.r_[starts, n])
    return np.arange(n) - np.repeat(starts, lengths)


def _trec_order(rows: np.ndarray, scores: np.ndarray, doc_rank: np.ndarray, n_docs: int) -> np.ndarray:
    """Sort order: query asc, score desc, doc id desc; one int64 key sort when it fits, else ``lexsort``."""
    if len(rows) == 0:
        return np.zeros(0, dtype=np.int64)
    _, score_rank = np.unique(-scores, return_inverse=True)
    score_rank = score_rank.reshape(-1)
    n_scores = int(score_rank.max()) + 1
    if (int(rows.max()) + 1) * n_scores * max(n_docs, 1) < 2**62:
        key = (rows * n_scores + score_rank) * n_docs + (n_docs - 1 - doc_rank)
        return np.argsort(key, kind="stable")
    return np.lexsort((-doc_rank, -scores, rows))


def evaluate_run(
    qrels: Qrels,
    run: Run,
    k_values: Sequence[int] = DEFAULT_K,
    metrics: Sequence[Metric] = ALL_METRICS,
    *,
    relevance_level: float = 1,
) -> RankingScores:
    """Score a run (``{query_id: {doc_id: score}}``) against judgements (``{query_id: {doc_id: relevance}}``).

    Args:
        qrels: graded judgements; every query here is evaluated (missing from ``run`` -> all zeros).
        run: retrieval scores per query; queries without judgements are ignored (counted).
        k_values: cutoffs.
        metrics: any of ``ndcg, map, recall, precision, mrr, recall_cap``.
        relevance_level: minimum judgement that counts as relevant (trec_eval ``-l``).

    Returns:
        ``RankingScores`` with keys like ``ndcg_at_10`` (fractions, as MTEB stores them).

    Raises:
        ValueError: no judged queries, a cutoff < 1 or an unknown metric.
    """
    ks, names = _check_args(k_values, metrics)
    query_ids = [q for q, docs in qrels.items() if docs]
    if not query_ids:
        raise ValueError("qrels contain no judged queries; nothing to evaluate")
    qindex = {q: i for i, q in enumerate(query_ids)}
    nq, depth = len(query_ids), ks[-1]
    skipped = sum(1 for q in run if q not in qindex)
    if skipped:
        logger.info("%d run queries have no judgements and are ignored", skipped)

    vocab: dict[str, int] = {}
    r_rows, r_doc_ids, scores = _flatten(qindex, run, vocab)
    j_rows, j_doc_ids, rels = _flatten(qindex, qrels, vocab)
    doc_rank = _byte_order_ranks(vocab)
    is_rel_judged = rels >= relevance_level
    num_rel = np.bincount(j_rows[is_rel_judged], minlength=nq).astype(np.float64)

    # ranked run: query asc, score desc, doc id desc (trec_eval), cut at the deepest k
    order = _trec_order(r_rows, scores, doc_rank[r_doc_ids], len(vocab))
    rows_sorted = r_rows[order]
    ranks = _group_ranks(rows_sorted)
    keep = ranks < depth
    run_keys = rows_sorted[keep] * len(vocab) + r_doc_ids[order][keep]
    judged_keys = j_rows * len(vocab) + j_doc_ids
    jorder = np.argsort(judged_keys, kind="stable")
    judged_sorted = judged_keys[jorder]
    pos = np.clip(np.searchsorted(judged_sorted, run_keys), 0, max(len(judged_sorted) - 1, 0))
    found = judged_sorted[pos] == run_keys if len(judged_sorted) else np.zeros(len(run_keys), dtype=bool)
    hit_rel = np.where(found, rels[jorder][pos] if len(rels) else 0.0, 0.0)

    gains = np.zeros((nq, depth))
    gains[rows_sorted[keep], ranks[keep]] = np.maximum(hit_rel, 0.0)
    relevant = np.zeros((nq, depth))
    relevant[rows_sorted[keep], ranks[keep]] = hit_rel >= relevance_level
    cum_rel = np.cumsum(relevant, axis=1)
    positions = np.arange(1, depth + 1, dtype=np.float64)

    out: dict[str, np.ndarray] = {}
    if "ndcg" in names:
        discount = 1.0 / np.log2(positions + 1.0)
        ideal = np.zeros((nq, depth))
        pos_gain = rels > 0
        irows, igains = j_rows[pos_gain], rels[pos_gain]
        iorder = np.lexsort((-igains, irows))
        iranks = _group_ranks(irows[iorder])
        ikeep = iranks < depth
        ideal[irows[iorder][ikeep], iranks[ikeep]] = igains[iorder][ikeep]
        dcg, idcg = np.cumsum(gains * discount, axis=1), np.cumsum(ideal * discount, axis=1)
        for k in ks:
            out[metric_key("ndcg", k)] = _safe_div(dcg[:, k - 1], idcg[:, k - 1])
    if "map" in names:
        cum_prec = np.cumsum(relevant * cum_rel / positions, axis=1)
        for k in ks:
            out[metric_key("map", k)] = _safe_div(cum_prec[:, k - 1], num_rel)
    if "recall" in names:
        for k in ks:
            out[metric_key("recall", k)] = _safe_div(cum_rel[:, k - 1], num_rel)
    if "precision" in names:
        for k in ks:
            out[metric_key("precision", k)] = cum_rel[:, k - 1] / k
    if "mrr" in names:
        first = np.where(relevant.any(axis=1), relevant.argmax(axis=1), depth)
        for k in ks:
            out[metric_key("mrr", k)] = np.where(first < k, 1.0 / (first + 1.0), 0.0)
    if "recall_cap" in names:
        for k in ks:
            out[metric_key("recall_cap", k)] = _safe_div(cum_rel[:, k - 1], np.minimum(num_rel, k))
    ordered = {metric_key(m, k): out[metric_key(m, k)] for m in names for k in ks}
    averages = {key: float(values.mean()) for key, values in ordered.items()}
    return RankingScores(scores=averages, query_ids=query_ids, per_query=ordered, skipped_run_queries=skipped)


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    den = np.broadcast_to(den, num.shape)
    return np.divide(num, den, out=np.zeros_like(num, dtype=np.float64), where=den > 0)


def results_to_run(query_ids: Sequence[str], ids: Sequence[Sequence[str]], scores: Sequence[Sequence[float]]) -> dict:
    """``{query_id: {doc_id: score}}`` from per-query ranked id and score lists (e.g. ``SearchResults``)."""
    if len(query_ids) != len(ids) or len(ids) != len(scores):
        raise ValueError(f"lengths differ: {len(query_ids)} query ids, {len(ids)} id lists, {len(scores)} score lists")
    return {q: dict(zip(map(str, d), map(float, s))) for q, d, s in zip(query_ids, ids, scores)}
