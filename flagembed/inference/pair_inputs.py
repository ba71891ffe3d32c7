"""Token ids for (query, passage) pairs: the one place reranker inputs are built (REFERENCE.md §1.8, §2.4).

Queries and passages are tokenized in bulk by the fast tokenizer (no special tokens, query cut to
``query_max_length``, passage to ``max_length``), then joined in Python exactly as the reference's
``prepare_for_model(q, p, truncation="only_second")`` does, so no per-pair tokenizer call is needed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from flagembed.engine import tokenize

DEFAULT_LLM_PROMPT = (
    "Given a query A and a passage B, determine whether the passage contains an answer to the query by "
    "providing a prediction of either 'Yes' or 'No'."
)
LIGHTWEIGHT_PROMPT = "Predict whether passage B contains an answer to query A."


@dataclass
class PairTokens:
    """Joined token ids per pair plus the segment boundaries the models need."""

    ids: list[list[int]]
    head_len: np.ndarray  # tokens before the passage (specials + query + separator), per pair
    tail_len: np.ndarray  # tokens after the passage (closing specials / separator + prompt), per pair
    truncated: np.ndarray  # bool: the passage (or query) lost tokens

    @property
    def num_truncated(self) -> int:
        return int(self.truncated.sum())


@dataclass(frozen=True)
class PairTemplate:
    """How a tokenizer wraps a pair with special tokens: ``prefix A middle B suffix`` and their type ids."""

    prefix: tuple[int, ...]
    middle: tuple[int, ...]
    suffix: tuple[int, ...]
    first_type: int = 0
    second_type: int = 0

    @property
    def num_special(self) -> int:
        return len(self.prefix) + len(self.middle) + len(self.suffix)


def pair_template(tokenizer: Any) -> PairTemplate:
    """Read the pair template off the tokenizer by encoding a known pair once.

    Works for any tokenizer whose pair encoding is ``prefix + A + middle + B + suffix`` (BERT, XLM-R,
    RoBERTa, DeBERTa, ...), on transformers 4.x and 5.x alike (5.x dropped ``prepare_for_model``).

    Raises:
        ValueError: the tokenizer's pair encoding does not have that shape.
    """
    a = tokenizer("a", add_special_tokens=False)["input_ids"]
    b = tokenizer("b", add_special_tokens=False)["input_ids"]
    enc = tokenizer("a", "b", return_token_type_ids=True)
    joint = list(enc["input_ids"])
    types = list(enc.get("token_type_ids") or [0] * len(joint))
    extra = len(joint) - len(a) - len(b)
    for lp in range(extra + 1):
        if joint[lp : lp + len(a)] != a:
            continue
        for lm in range(extra - lp + 1):
            start_b = lp + len(a) + lm
            if joint[start_b : start_b + len(b)] == b:
                first, second = types[lp], types[start_b]
                return PairTemplate(
                    prefix=tuple(joint[:lp]),
                    middle=tuple(joint[lp + len(a) : start_b]),
                    suffix=tuple(joint[start_b + len(b) :]),
                    first_type=int(first),
                    second_type=int(second),
                )
    raise ValueError(f"cannot read the pair template of {type(tokenizer).__name__}: {joint!r} for ('a', 'b')")


def _tokens(tokenizer: Any, texts: Sequence[str], max_length: int) -> tuple[list[list[int]], np.ndarray]:
    if max_length < 1:
        return [[] for _ in texts], np.fromiter((bool(t) for t in texts), dtype=bool, count=len(texts))
    tok = tokenize(tokenizer, texts, max_length, add_special_tokens=False)
    return tok.ids, tok.truncated


def cross_encoder_pairs(
    tokenizer: Any,
    queries: Sequence[str],
    passages: Sequence[str],
    max_length: int,
    query_max_length: int,
) -> PairTokens:
    """``prefix q middle p suffix`` ids, query cut to ``query_max_length`` and passage to fit ``max_length``.

    Matches the reference's ``prepare_for_model(q, p, truncation="only_second", max_length)``; where
    even an empty passage would not fit, the query is cut too (the reference returns an overlong input).
    """
    tpl = pair_template(tokenizer)
    q_ids, q_cut = _tokens(tokenizer, queries, query_max_length)
    p_ids, p_cut = _tokens(tokenizer, passages, max_length)
    out: list[list[int]] = []
    head = np.empty(len(q_ids), dtype=np.int64)
    cut = q_cut | p_cut
    for i, (q, p) in enumerate(zip(q_ids, p_ids)):
        room = max_length - tpl.num_special - len(q)
        if room < len(p):
            cut[i] = True
            if room < 0:
                q = q[: max(0, len(q) + room)]
                room = 0
            p = p[:room]
        out.append([*tpl.prefix, *q, *tpl.middle, *p, *tpl.suffix])
        head[i] = len(tpl.prefix) + len(q) + len(tpl.middle)
    tail = np.full(len(out), len(tpl.suffix), dtype=np.int64)
    return PairTokens(ids=out, head_len=head, tail_len=tail, truncated=cut)


def llm_pairs(
    tokenizer: Any,
    queries: Sequence[str],
    passages: Sequence[str],
    max_length: int,
    query_max_length: int,
    prompt: str,
    add_bos: bool,
) -> PairTokens:
    """``<bos> q \\n p \\n prompt`` ids (REFERENCE.md §2.4), the ``\\n p`` part cut to fit.

    The query and passage already carry their instructions (``"A: "``/``"B: "`` by default).
    ``head_len`` is ``len(bos + q + sep)`` and ``tail_len`` is ``len(sep + prompt)``, the lengths the
    lightweight reranker's token compression keeps intact.
    """
    sep = list(tokenizer("\n", add_special_tokens=False)["input_ids"])
    prompt_ids = list(tokenizer(prompt, add_special_tokens=False)["input_ids"]) if prompt else []
    bos = [int(tokenizer.bos_token_id)] if add_bos and tokenizer.bos_token_id is not None else []
    q_ids, q_cut = _tokens(tokenizer, queries, query_max_length)
    p_ids, p_cut = _tokens(tokenizer, passages, max_length)
    budget = max_length + len(sep) + len(prompt_ids)
    tail_ids = sep + prompt_ids
    out: list[list[int]] = []
    head = np.empty(len(q_ids), dtype=np.int64)
    cut = q_cut | p_cut
    for i, (q, p) in enumerate(zip(q_ids, p_ids)):
        first = bos + q
        second = sep + p
        room = budget - len(first)
        if room < len(second):
            cut[i] = True
            if room < 0:
                first = first[: len(first) + room]
                room = 0
            second = second[:room]
        out.append(first + second + tail_ids)
        head[i] = len(first) + min(len(sep), len(second))
    tail = np.full(len(out), len(tail_ids), dtype=np.int64)
    return PairTokens(ids=out, head_len=head, tail_len=tail, truncated=cut)
