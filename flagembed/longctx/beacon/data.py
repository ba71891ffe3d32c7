"""Beacon training rows: plain long texts (LM loss on every token) and chat rows (loss on assistant turns)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def read_jsonl(paths: Sequence[str | Path]) -> list[dict[str, Any]]:
    """Rows of one or more jsonl files; each row has "text" or "conversations"."""
    rows: list[dict[str, Any]] = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for line_no, line in enumerate(f, 1):
                if not line.strip():
                    continue
                row = json.loads(line)
                if not isinstance(row, dict) or not ("text" in row or "conversations" in row):
                    raise ValueError(f"{path}:{line_no}: need a JSON object with 'text' or 'conversations'")
                rows.append(row)
    return rows


def text_row(tokenizer: Any, text: str, max_length: int) -> dict[str, list[int]]:
    """Tokenise, truncate to ``max_length``, add eos when shorter; labels = input_ids (the reference's LM rows)."""
    ids = tokenizer(text, add_special_tokens=True)["input_ids"][:max_length]
    eos = tokenizer.eos_token_id
    if eos is not None and len(ids) < max_length and (not ids or ids[-1] != eos):
        ids = ids + [eos]
    return {"input_ids": ids, "labels": list(ids)}


def chat_row(tokenizer: Any, conversations: list[dict[str, str]]) -> dict[str, list[int]]:
    """Render with the tokenizer's chat template turn by turn; label only assistant content (+ its end marker).

    Spans are found by rendering each prefix, so no string splitting on role markers is needed.
    """
    msgs = [dict(role=m["role"], content=m["content"]) for m in conversations]
    while msgs and msgs[0]["role"] not in ("user", "system"):
        msgs = msgs[1:]  # the reference drops a leading non-user turn
    if not msgs:
        raise ValueError("a chat row without a user turn")

    def render(part: list[dict[str, str]], gen: bool = False) -> str:
        return tokenizer.apply_chat_template(part, tokenize=False, add_generation_prompt=gen)

    def tok(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"] if text else []

    ids: list[int] = []
    labels: list[int] = []
    prev = ""
    for k, msg in enumerate(msgs):
        if msg["role"] == "assistant":
            head = render(msgs[:k], gen=True)
            _check_prefix(prev, head, k)
            span = tok(head[len(prev) :])
            ids += span
            labels += [-100] * len(span)
            prev = head
        full = render(msgs[: k + 1])
        _check_prefix(prev, full, k)
        span = tok(full[len(prev) :])
        ids += span
        labels += span if msg["role"] == "assistant" else [-100] * len(span)
        prev = full
    return {"input_ids": ids, "labels": labels}


def _check_prefix(prev: str, text: str, turn: int) -> None:
    if not text.startswith(prev):
        raise ValueError(f"turn {turn}: the chat template does not render conversations prefix by prefix")


def build_rows(
    tokenizer: Any, rows: Iterable[dict[str, Any]], min_length: int, max_length: int
) -> list[dict[str, list[int]]]:
    """Tokenised rows; text rows are truncated, chat rows over ``max_length`` dropped, rows under ``min_length``
    dropped (a beacon training row must be longer than one window)."""
    out: list[dict[str, list[int]]] = []
    dropped = 0
    for row in rows:
        if "conversations" in row:
            item = chat_row(tokenizer, row["conversations"])
            if len(item["input_ids"]) > max_length:
                dropped += 1
                continue
        else:
            item = text_row(tokenizer, row["text"], max_length)
        if len(item["input_ids"]) < min_length or all(x == -100 for x in item["labels"]):
            dropped += 1
            continue
        out.append(item)
    if dropped:
        logger.info("dropped %d rows outside [%d, %d] tokens", dropped, min_length, max_length)
    if not out:
        raise ValueError(f"no training row has {min_length}..{max_length} tokens (min_length must exceed the window)")
    return out
