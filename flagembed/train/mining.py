"""Hard-negative mining (the reference's ``scripts/hn_mine.py``, REFERENCE.md §3.5), in bounded memory.

The candidate corpus (a pool file, or every ``pos``/``neg`` text of the data) is encoded once into an
exact inner-product index (:class:`flagembed.index.DenseIndex`); queries are encoded and searched
``chunk_size`` at a time, so memory holds the corpus vectors plus one chunk of queries and results.
For each query, negatives are drawn from ranks ``range_for_sampling`` (default 10-210) after
dropping its positives and any text equal to the query; when too few remain, random corpus texts
(never a positive or the query) top the list up.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from flagembed.engine import progress_bar
from flagembed.index import DenseIndex

logger = logging.getLogger(__name__)


@dataclass
class MiningStats:
    """What mining did (printed by the CLI)."""

    queries: int = 0
    corpus_size: int = 0
    negatives_per_query: float = 0.0
    topped_up_queries: int = 0
    random_negatives: int = 0
    dropped_positives: int = 0
    dropped_query_copies: int = 0
    mean_rank: float = 0.0
    rank_histogram: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """Plain dict for JSON or a table."""
        return dict(self.__dict__)


def parse_range(text: str | Sequence[int]) -> tuple[int, int]:
    """``"10-210"`` or ``(10, 210)`` → ``(10, 210)``.

    Raises:
        ValueError: not two integers ``0 <= lo < hi``.
    """
    if isinstance(text, str):
        parts = text.split("-")
        try:
            lo, hi = (int(x) for x in parts)
        except ValueError:
            raise ValueError(f"range_for_sampling must look like '10-210', got {text!r}") from None
    else:
        lo, hi = (int(x) for x in text)
    if not 0 <= lo < hi:
        raise ValueError(f"range_for_sampling needs 0 <= start < end, got {lo}-{hi}")
    return lo, hi


def candidate_corpus(examples: Sequence[dict[str, Any]], pool: Sequence[str] | None = None) -> list[str]:
    """The texts negatives are mined from: ``pool`` if given, else all ``pos`` and ``neg`` texts (deduplicated)."""
    texts = list(pool) if pool is not None else [t for ex in examples for t in [*ex["pos"], *ex.get("neg", [])]]
    return list(dict.fromkeys(texts))


def mine_hard_negatives(
    embedder: Any,
    examples: Sequence[dict[str, Any]],
    *,
    candidate_pool: Sequence[str] | None = None,
    range_for_sampling: str | Sequence[int] = "10-210",
    negative_number: int = 15,
    chunk_size: int = 4096,
    query_instruction: str | None = None,
    seed: int = 42,
    corpus_vectors: np.ndarray | None = None,
    show_progress: bool | None = None,
) -> tuple[list[dict[str, Any]], MiningStats]:
    """Replace each example's ``neg`` with mined hard negatives.

    Args:
        embedder: a :class:`flagembed.inference.Embedder` (``encode_queries``/``encode_corpus``).
        examples: training records ``{"query", "pos", ...}``; other fields are kept (teacher
            scores of the old negatives are dropped).
        candidate_pool: texts to mine from (default: every ``pos``/``neg`` text of ``examples``).
        range_for_sampling: ranks to sample from, ``"start-end"``.
        negative_number: negatives per query.
        chunk_size: queries encoded and searched at a time (bounds memory).
        query_instruction: instruction for queries (default: the embedder's own).
        seed: sampling seed.
        corpus_vectors: precomputed corpus embeddings (row ``i`` = corpus text ``i``).
        show_progress: a bar over the queries mined (``None``: when stderr is a terminal and the job is large;
            the embedder shows its own bar while encoding the corpus).

    Returns:
        The new records and :class:`MiningStats`.

    Raises:
        ValueError: bad arguments, or a corpus with no text that may serve as a negative.
    """
    lo, hi = parse_range(range_for_sampling)
    if negative_number < 1:
        raise ValueError(f"negative_number must be >= 1, got {negative_number}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    for i, ex in enumerate(examples):
        if not isinstance(ex.get("query"), str) or not isinstance(ex.get("pos"), list):
            raise ValueError(f"examples[{i}] needs a 'query' string and a 'pos' list")
    corpus = candidate_corpus(examples, candidate_pool)
    if not corpus:
        raise ValueError("the candidate corpus is empty")
    if corpus_vectors is None:
        corpus_vectors = np.asarray(embedder.encode_corpus(corpus), dtype=np.float32)
    if len(corpus_vectors) != len(corpus):
        raise ValueError(f"corpus_vectors has {len(corpus_vectors)} rows for {len(corpus)} corpus texts")
    index = DenseIndex(corpus_vectors.shape[1])
    index.add([str(i) for i in range(len(corpus))], corpus_vectors)
    position = {text: i for i, text in enumerate(corpus)}
    rng = np.random.default_rng(seed)
    stats = MiningStats(queries=len(examples), corpus_size=len(corpus))
    ranks: list[int] = []
    out: list[dict[str, Any]] = []
    kwargs = {} if query_instruction is None else {"instruction": query_instruction}
    with progress_bar(len(examples), show_progress, "Mining", unit="query") as bar:
        for start in range(0, len(examples), chunk_size):
            chunk = examples[start : start + chunk_size]
            qvec = embedder.encode_queries([ex["query"] for ex in chunk], **kwargs)
            found = index.search(np.asarray(qvec, dtype=np.float32), top_k=min(hi, len(corpus)))
            for ex, ids in zip(chunk, found.ids):
                ranked = [int(x) for x in ids]
                out.append(_mine_one(ex, ranked, corpus, position, lo, negative_number, rng, stats, ranks))
            bar.update(len(chunk))
    stats.negatives_per_query = float(np.mean([len(ex["neg"]) for ex in out])) if out else 0.0
    stats.mean_rank = float(np.mean(ranks)) if ranks else 0.0
    edges = [lo, lo + (hi - lo) // 4, lo + (hi - lo) // 2, hi]
    hist = np.histogram(ranks, bins=edges)[0] if ranks else np.zeros(3, dtype=int)
    stats.rank_histogram = {f"{a}-{b}": int(c) for a, b, c in zip(edges[:-1], edges[1:], hist)}
    logger.info("mined negatives: %s", stats.as_dict())
    return out, stats


def _mine_one(
    ex: dict[str, Any],
    ranked: list[int],
    corpus: list[str],
    position: dict[str, int],
    lo: int,
    n: int,
    rng: np.random.Generator,
    stats: MiningStats,
    ranks: list[int],
) -> dict[str, Any]:
    banned = {position[t] for t in ex["pos"] if t in position}
    query_pos = position.get(ex["query"])
    candidates: list[tuple[int, int]] = []
    for rank, doc in enumerate(ranked[lo:], start=lo):
        if doc < 0:
            break
        if doc in banned:
            stats.dropped_positives += 1
        elif doc == query_pos:
            stats.dropped_query_copies += 1
        else:
            candidates.append((rank, doc))
    if len(candidates) > n:
        candidates = [candidates[i] for i in sorted(rng.choice(len(candidates), size=n, replace=False))]
    chosen = [doc for _, doc in candidates]
    ranks.extend(rank for rank, _ in candidates)
    if len(chosen) < n:
        stats.topped_up_queries += 1
        exclude = banned | set(chosen) | ({query_pos} if query_pos is not None else set())
        free = len(corpus) - len(exclude)
        want = min(n - len(chosen), free)
        extra: list[int] = []
        while len(extra) < want:  # rejection sampling: the excluded set is tiny next to the corpus
            doc = int(rng.integers(len(corpus)))
            if doc not in exclude:
                exclude.add(doc)
                extra.append(doc)
        stats.random_negatives += len(extra)
        chosen += extra
    record = {k: v for k, v in ex.items() if k not in ("neg", "neg_scores")}
    record["neg"] = [corpus[d] for d in chosen]
    return record


def mine_file(
    model: str,
    input_file: str,
    output_file: str,
    *,
    candidate_pool: str | None = None,
    embedder_kwargs: dict[str, Any] | None = None,
    **mine_kwargs: Any,
) -> MiningStats:
    """Mine hard negatives for a training jsonl file with embedder ``model`` and write the result.

    ``candidate_pool`` is a jsonl of ``{"text"}`` (or ``{"title","text"}``) records or a .txt file.
    """
    from flagembed._io import check_output_file, read_texts
    from flagembed.inference import Embedder
    from flagembed.inference.inputs import as_corpus_list
    from flagembed.train.data import read_examples, write_jsonl

    check_output_file(output_file)  # before the model loads
    examples = read_examples(input_file)
    pool = as_corpus_list(read_texts(candidate_pool))[0] if candidate_pool else None
    embedder = Embedder(model, **(embedder_kwargs or {}))
    mined, stats = mine_hard_negatives(embedder, examples, candidate_pool=pool, **mine_kwargs)
    write_jsonl(output_file, mined)
    return stats
