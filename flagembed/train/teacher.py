"""Teacher scores for knowledge distillation (the reference's ``scripts/add_reranker_score.py``).

Every ``(query, pos/neg)`` pair of the data is scored by a reranker in one call, so the engine
batches all pairs by length across examples; the scores are written back as ``pos_scores`` and
``neg_scores`` in the order of ``pos`` and ``neg``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol

logger = logging.getLogger(__name__)

SCORE_CHUNK = 16384  # pairs scored per call when a progress bar is shown (each call still length-sorts)


class PairScorer(Protocol):
    """Anything with a reranker's ``compute_score(pairs) -> list[float]``."""

    def compute_score(self, sentence_pairs: Any, **kwargs: Any) -> list[float]:  # noqa: D102
        ...


def load_teacher(
    model_name_or_path: str,
    model_class: str | None = None,
    *,
    device: str | None = None,
    batch_size: int | None = None,
    max_length: int | None = None,
    trust_remote_code: bool = False,
) -> PairScorer:
    """A flagembed reranker for ``model_name_or_path``: the registry's class, ``model_class``, else a cross-encoder.

    ``model_class`` takes FlagEmbedding's names (``encoder-only-base``, ``decoder-only-base``,
    ``decoder-only-layerwise``, ``decoder-only-lightweight``).
    """
    from flagembed.inference.compat import FlagAutoReranker
    from flagembed.inference.reranker import Reranker
    from flagembed.models import lookup

    spec = lookup(model_name_or_path)
    if model_class is None and (spec is None or "reranker" not in spec.kind):
        kwargs: dict[str, Any] = {"device": device, "trust_remote_code": trust_remote_code}
        if batch_size:
            kwargs["batch_size"] = batch_size
        if max_length:
            kwargs["max_length"] = max_length
        return Reranker(model_name_or_path, **kwargs)
    fe_kwargs: dict[str, Any] = {"devices": device, "trust_remote_code": trust_remote_code}
    if batch_size:
        fe_kwargs["batch_size"] = batch_size
    if max_length:
        fe_kwargs["max_length"] = max_length
    return FlagAutoReranker.from_finetuned(model_name_or_path, model_class=model_class, **fe_kwargs)


def add_teacher_scores(
    scorer: PairScorer,
    examples: Sequence[dict[str, Any]],
    *,
    query_instruction: str | None = None,
    show_progress: bool | None = None,
    **score_kwargs: Any,
) -> list[dict[str, Any]]:
    """Copies of ``examples`` with ``pos_scores``/``neg_scores`` from ``scorer``.

    Args:
        scorer: a reranker (``compute_score``).
        examples: records with ``query``, ``pos`` and optional ``neg``.
        query_instruction: prefix for the query text the teacher sees (default: none; the
            reranker's own instructions still apply).
        show_progress: a bar over the pairs scored (``None``: when stderr is a terminal and there are
            many pairs); with a bar, pairs are scored ``SCORE_CHUNK`` at a time.
        score_kwargs: passed to ``compute_score`` (e.g. ``normalize``, ``max_length``).

    Raises:
        ValueError: a record without a ``query`` string or ``pos`` list.
    """
    pairs: list[tuple[str, str]] = []
    for i, ex in enumerate(examples):
        if not isinstance(ex.get("query"), str) or not isinstance(ex.get("pos"), list):
            raise ValueError(f"examples[{i}] needs a 'query' string and a 'pos' list")
        query = f"{query_instruction}{ex['query']}" if query_instruction else ex["query"]
        pairs.extend((query, p) for p in [*ex["pos"], *ex.get("neg", [])])
    from flagembed.engine import progress_bar

    scores: list[float] = []
    with progress_bar(len(pairs), show_progress, "Scoring", unit="pair") as bar:
        step = SCORE_CHUNK if not bar.disable else max(1, len(pairs))
        inner = dict(score_kwargs) if bar.disable else {"show_progress": False, **score_kwargs}  # one bar, not two
        for start in range(0, len(pairs), step):
            part = pairs[start : start + step]
            scores.extend(scorer.compute_score(part, **inner))
            bar.update(len(part))
    if len(scores) != len(pairs):
        raise ValueError(f"the scorer returned {len(scores)} scores for {len(pairs)} pairs")
    out, k = [], 0
    for ex in examples:
        n_pos, n_neg = len(ex["pos"]), len(ex.get("neg", []))
        record = dict(ex)
        record["pos_scores"] = [float(s) for s in scores[k : k + n_pos]]
        record["neg_scores"] = [float(s) for s in scores[k + n_pos : k + n_pos + n_neg]]
        k += n_pos + n_neg
        out.append(record)
    logger.info("scored %d pairs of %d examples", len(pairs), len(examples))
    return out


def score_file(
    reranker: str,
    input_file: str,
    output_file: str,
    *,
    model_class: str | None = None,
    reranker_kwargs: dict[str, Any] | None = None,
    show_progress: bool | None = None,
    **score_kwargs: Any,
) -> int:
    """Add teacher scores from ``reranker`` to every record of a training jsonl file; returns pairs scored."""
    from flagembed._io import check_output_file
    from flagembed.train.data import read_examples, write_jsonl

    check_output_file(output_file)  # before the model loads
    examples = read_examples(input_file)
    scorer = load_teacher(reranker, model_class, **(reranker_kwargs or {}))
    scored = add_teacher_scores(scorer, examples, show_progress=show_progress, **score_kwargs)
    write_jsonl(output_file, scored)
    return sum(len(r["pos_scores"]) + len(r["neg_scores"]) for r in scored)
