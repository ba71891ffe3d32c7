"""Training rows for context extension: chat rows labelled on assistant turns only, plain text (truncated or packed).

Chat masking renders the conversation with the tokenizer's own chat template, finds each assistant turn's
characters by rendering the conversation up to that turn (with and without the turn), and labels exactly the
tokens that overlap an assistant turn (its content and the template's end-of-turn marker, without the separators
around it).
It works for any prefix-stable template (Llama-3, ChatML/Qwen, Mistral ``[INST]``), needs a fast tokenizer
(offsets), and tokenizes the whole text once, so BPE merges at turn boundaries match inference.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable, Sequence
from typing import Any

import torch

from flagembed.longctx.loss import IGNORE_INDEX

logger = logging.getLogger(__name__)


def _messages(row: dict[str, Any], index: int) -> list[dict[str, str]]:
    turns = row.get("messages", row.get("conversations"))
    if not isinstance(turns, list) or not turns:
        raise ValueError(f"row {index}: 'messages' (or 'conversations') must be a non-empty list of turns")
    out = []
    for j, turn in enumerate(turns):
        role = turn.get("role", turn.get("from"))
        content = turn.get("content", turn.get("value"))
        role = {"human": "user", "gpt": "assistant"}.get(role, role)
        if role not in ("system", "user", "assistant") or not isinstance(content, str):
            raise ValueError(f"row {index} turn {j}: needs role system/user/assistant and text content, got {turn}")
        out.append({"role": role, "content": content})
    if not any(t["role"] == "assistant" for t in out):
        raise ValueError(f"row {index}: no assistant turn to learn from")
    return out


def _render(tokenizer: Any, messages: list[dict[str, str]], generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def assistant_spans(tokenizer: Any, messages: list[dict[str, str]]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the ``[start, end)`` character spans of its assistant turns.

    Raises:
        ValueError: the template is not prefix-stable (a turn's rendering is not a prefix of the whole).
    """
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("the tokenizer has no chat template; give plain 'text' rows or set tokenizer.chat_template")
    full = _render(tokenizer, messages, False)
    spans = []
    for i, turn in enumerate(messages):
        if turn["role"] != "assistant":
            continue
        before = _render(tokenizer, messages[:i], True) if i else ""
        upto = _render(tokenizer, messages[: i + 1], False)
        if not full.startswith(upto) or not upto.startswith(before):
            raise ValueError(f"chat template is not prefix-stable at turn {i}; cannot locate the assistant span")
        start = len(before)
        while start < len(upto) and upto[start] in " \n" and not turn["content"].startswith(upto[start]):
            start += 1  # a template's separator after the generation prompt is not the model's to learn
        end = max(start, len(upto.rstrip(" \n")))
        spans.append((start, end))  # trailing separators after the end-of-turn marker are not generated
    return full, spans


def chat_example(
    tokenizer: Any, messages: list[dict[str, str]], max_length: int | None = None
) -> dict[str, Any] | None:
    """``{input_ids, labels, length}`` with labels on assistant turns only; None when longer than ``max_length``."""
    text, spans = assistant_spans(tokenizer, messages)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = list(enc["input_ids"]), enc["offset_mapping"]
    if max_length is not None and len(ids) > max_length:
        return None  # dropped, not truncated: a cut conversation would teach answers without their question
    labels = [IGNORE_INDEX] * len(ids)
    for k, (start, end) in enumerate(offsets):
        if end > start and any(start < b and end > a for a, b in spans):  # a token touching an assistant turn
            labels[k] = ids[k]
    return {"input_ids": ids, "labels": labels, "length": len(ids)}


def text_example(tokenizer: Any, text: str, max_length: int) -> dict[str, Any]:
    """A plain-text row labelled on every token: truncated to ``max_length``, eos appended when shorter."""
    ids = list(tokenizer(text, add_special_tokens=True)["input_ids"])[:max_length]
    if len(ids) < max_length and tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    return {"input_ids": ids, "labels": list(ids), "length": len(ids)}


def pack_texts(tokenizer: Any, texts: Iterable[str], max_length: int) -> list[dict[str, Any]]:
    """Concatenate texts (each ended by eos) and cut the stream into full ``max_length`` rows (the tail is dropped)."""
    stream: list[int] = []
    rows = []
    for text in texts:
        stream.extend(tokenizer(text, add_special_tokens=True)["input_ids"])
        if tokenizer.eos_token_id is not None:
            stream.append(tokenizer.eos_token_id)
        while len(stream) >= max_length:
            chunk, stream = stream[:max_length], stream[max_length:]
            rows.append({"input_ids": chunk, "labels": list(chunk), "length": max_length})
    return rows


def build_rows(tokenizer: Any, rows: Sequence[dict[str, Any]], max_length: int, pack: bool = False) -> tuple[
        list[dict[str, Any]], dict[str, int]]:
    """Training examples from chat rows (``messages``/``conversations``) and text rows (``text``).

    Returns the examples and counts ``{"chat", "text", "dropped"}`` (chat rows over ``max_length`` are dropped).
    """
    out, texts, stats = [], [], {"chat": 0, "text": 0, "dropped": 0}
    for i, row in enumerate(rows):
        if "text" in row and not ("messages" in row or "conversations" in row):
            if not isinstance(row["text"], str):
                raise ValueError(f"row {i}: 'text' must be a string")
            texts.append(row["text"])
            continue
        example = chat_example(tokenizer, _messages(row, i), max_length)
        if example is None:
            stats["dropped"] += 1
        else:
            out.append(example)
            stats["chat"] += 1
    text_rows = pack_texts(tokenizer, texts, max_length) if pack else [text_example(tokenizer, t, max_length)
                                                                        for t in texts]
    stats["text"] = len(text_rows)
    if stats["dropped"]:
        logger.warning("dropped %d chat rows longer than %d tokens", stats["dropped"], max_length)
    return out + text_rows, stats


def length_grouped_order(lengths: Sequence[int], batch_size: int, seed: int = 0, mega: int = 50) -> list[int]:
    """Indices shuffled, then sorted by length (longest first) inside groups of ``mega × batch_size``.

    HF's length-grouped sampling, as a fixed order: batches hold similar lengths (little padding) while the
    order across groups stays random.
    """
    idx = list(range(len(lengths)))
    random.Random(seed).shuffle(idx)
    size = max(1, mega * batch_size)
    out: list[int] = []
    for g in range(0, len(idx), size):
        out.extend(sorted(idx[g : g + size], key=lambda i: -lengths[i]))
    return out


class PadCollator:
    """Right-pad ``input_ids`` (pad id), ``labels`` (-100) and build ``attention_mask``."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, batch: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        width = max(len(b["input_ids"]) for b in batch)
        ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, b in enumerate(batch):
            n = len(b["input_ids"])
            ids[i, :n] = torch.tensor(b["input_ids"])
            labels[i, :n] = torch.tensor(b["labels"])
            mask[i, :n] = 1
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}


__all__ = [
    "PadCollator",
    "assistant_spans",
    "build_rows",
    "chat_example",
    "length_grouped_order",
    "pack_texts",
    "text_example",
]
