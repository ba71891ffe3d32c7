"""Passkey, needle-in-a-haystack, sliding-window perplexity and topic retrieval, as JSON-able result dicts."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from flagembed.longctx.harness import prompts as P
from flagembed.longctx.harness import scorers as S
from flagembed.longctx.harness.runner import Stopwatch, generate_text, model_device, safe_exp, sequence_loss

logger = logging.getLogger(__name__)


def _grid_result(task: str, lengths: Sequence[int], depths: Sequence[float], records: list[dict[str, Any]],
                 metric: str) -> dict[str, Any]:
    matrix = [[0.0 for _ in depths] for _ in lengths]
    counts = [[0 for _ in depths] for _ in lengths]
    for r in records:
        i, j = r["cell"]
        matrix[i][j] += r[metric]
        counts[i][j] += 1
    matrix = [[m / max(c, 1) for m, c in zip(row, crow)] for row, crow in zip(matrix, counts)]
    flat = [r[metric] for r in records]
    return {
        "task": task,
        "metric": metric,
        "lengths": list(lengths),
        "depths": list(depths),
        "matrix": matrix,  # [length][depth]
        "by_length": {str(n): sum(row) / len(row) for n, row in zip(lengths, matrix)},
        "mean": sum(flat) / len(flat) if flat else 0.0,
        "records": records,
    }


def eval_passkey(
    model: Any,
    tokenizer: Any,
    lengths: Sequence[int],
    depths: Sequence[float] = (0, 25, 50, 75, 100),
    *,
    seed: int = 123,
    samples: int = 1,
    max_new_tokens: int = 8,
    chat: bool | str = "auto",
    question: str = P.PASSKEY_QUESTION,
) -> dict[str, Any]:
    """Passkey retrieval over a length × depth grid: exact match of the first integer, and its fuzz ratio.

    Keys come from ``default_rng(seed)`` in grid order (length, depth, sample), so a run is reproducible.
    """
    P.check_grid(lengths, depths)
    use_chat = P.uses_chat(tokenizer, chat)
    keys = iter(P.passkeys(len(lengths) * len(depths) * samples, seed))
    records = []
    for i, length in enumerate(lengths):
        for j, depth in enumerate(depths):
            for _ in range(samples):
                prompt = P.passkey_prompt(tokenizer, length, depth, next(keys), chat=use_chat, question=question)
                output = generate_text(model, tokenizer, prompt.input_ids, max_new_tokens)
                score = S.passkey_score(output, prompt.answer)
                records.append({"cell": [i, j], **prompt.to_dict(), "output": output, **score})
        logger.info("passkey length %d: %.3f", length, sum(r["accuracy"] for r in records if r["length"] == length))
    out = _grid_result("passkey", lengths, depths, records, "accuracy")
    out["fuzz"] = sum(r["fuzz"] for r in records) / len(records)
    return out


def eval_needle(
    model: Any,
    tokenizer: Any,
    lengths: Sequence[int],
    depths: Sequence[float] = (0, 25, 50, 75, 100),
    *,
    haystack: str | Iterable[str | Path] | None = None,
    needle: str = P.NEEDLE,
    question: str = P.NEEDLE_QUESTION,
    max_new_tokens: int = 50,
    chat: bool | str = "auto",
) -> dict[str, Any]:
    """Needle-in-a-haystack: ROUGE-L recall of the first output line against the needle, per length × depth.

    ``haystack`` is a text, or local ``.txt`` files / folders of them (e.g. the Paul Graham essays); by default
    the passkey noise sentences.
    """
    P.check_grid(lengths, depths)
    text = haystack if isinstance(haystack, str) else P.read_haystack(haystack)
    use_chat = P.uses_chat(tokenizer, chat)
    records = []
    for i, length in enumerate(lengths):
        for j, depth in enumerate(depths):
            prompt = P.build_insertion_prompt(tokenizer, length, depth, needle, question, text, answer=needle.strip(),
                                              chat=use_chat)
            output = generate_text(model, tokenizer, prompt.input_ids, max_new_tokens)
            records.append({"cell": [i, j], **prompt.to_dict(), "output": output,
                            "rouge_recall": S.needle_score(output, needle)})
    return _grid_result("needle", lengths, depths, records, "rouge_recall")


def sliding_windows(n_tokens: int, max_length: int, stride: int, bos: bool) -> list[tuple[int, int, int]]:
    """``(begin, end, targets)`` chunks of the HF sliding-window recipe over ``n_tokens`` content tokens.

    Each chunk feeds ``content[begin:end]`` (plus a bos when ``bos``) and scores only its last ``targets``
    tokens, so every token is a target once (token 0 only when a bos predicts it). ``stride=0``: one chunk.
    """
    window = max_length - int(bos)
    if window < 1 or stride < 0:
        raise ValueError(f"max_length {max_length} (bos {bos}) and stride {stride} leave no window")
    out: list[tuple[int, int, int]] = []
    prev_end, begin = 0, 0
    while True:
        end = min(begin + window, n_tokens)
        out.append((begin, end, end - prev_end))
        prev_end = end
        if stride == 0 or end >= n_tokens:
            return out
        begin += stride


def eval_perplexity(
    model: Any, tokenizer: Any, texts: Sequence[str], max_length: int, stride: int | None = None,
    add_bos: bool | None = None, min_tokens: int = 2,
) -> dict[str, Any]:
    """Sliding-window perplexity: per-document NLL (token-weighted over its chunks), PPL = exp(mean doc NLL).

    ``stride`` defaults to ``max_length`` (disjoint chunks); ``0`` scores only the first ``max_length`` tokens of
    each text. ``add_bos`` defaults to whether the tokenizer adds one. Texts shorter than ``min_tokens`` are skipped.
    """
    stride = max_length if stride is None else stride
    prefix = P.special_prefix(tokenizer) if add_bos is None else ([tokenizer.bos_token_id] if add_bos else [])
    nlls, tokens, skipped = [], 0, 0
    with Stopwatch(model_device(model)) as watch:
        for text in texts:
            content = list(tokenizer(text, add_special_tokens=False)["input_ids"])
            if len(content) < min_tokens:
                skipped += 1
                continue
            total, count = 0.0, 0
            for begin, end, targets in sliding_windows(len(content), max_length, stride, bool(prefix)):
                ids = prefix + content[begin:end]
                labels = [-100] * (len(ids) - targets) + ids[len(ids) - targets :]
                loss, n = sequence_loss(model, ids, labels)
                total, count = total + loss * n, count + n
            if count:
                nlls.append(total / count)
                tokens += count
    if not nlls:
        raise ValueError(f"no text has at least {min_tokens} tokens")
    mean_nll = sum(nlls) / len(nlls)
    return {"task": "ppl", "max_length": max_length, "stride": stride, "documents": len(nlls), "skipped": skipped,
            "tokens": tokens, "nll": mean_nll, "ppl": safe_exp(mean_nll), "seconds": watch.seconds,
            "peak_mib": watch.peak_mib}


def perplexity_by_length(model: Any, tokenizer: Any, texts: Sequence[str], lengths: Sequence[int],
                         stride: int | None = 0) -> dict[str, Any]:
    """:func:`eval_perplexity` at each length (``stride=0``: the first L tokens of texts at least L long)."""
    runs = []
    for length in lengths:
        keep = texts
        if stride == 0:  # only texts that fill the window, so each length is measured at that length
            need = length - len(P.special_prefix(tokenizer))
            keep = [t for t in texts if len(tokenizer(t, add_special_tokens=False)["input_ids"]) >= need]
        if not keep:
            raise ValueError(f"no text reaches {length} tokens")
        runs.append(eval_perplexity(model, tokenizer, keep, length, stride))
    return {"task": "ppl", "lengths": list(lengths), "ppl": [r["ppl"] for r in runs], "runs": runs}


TOPIC_QUESTION = "What is the first topic we have discussed? Only give me the topic name. Do not summarize yourself."


def eval_topic(model: Any, tokenizer: Any, rows: Sequence[dict[str, Any]], max_new_tokens: int = 50,
               chat: bool | str = "auto") -> dict[str, Any]:
    """LongChat topic retrieval: is the first topic (lower-cased) in the output; grouped by ``num_topics``.

    Rows carry ``context`` and ``topics`` (and ``num_topics``), as in ``longeval/topic_retrieval.json``.
    """
    use_chat = P.uses_chat(tokenizer, chat)
    groups: dict[int, list[dict[str, Any]]] = {}
    for i, row in enumerate(rows):
        if "context" not in row or not row.get("topics"):
            raise ValueError(f"topic row {i} needs 'context' and a non-empty 'topics' list")
        text = row["context"] + "\n\n" + TOPIC_QUESTION
        if use_chat:
            ids = P.chat_ids(tokenizer, text)
        else:
            ids = P.special_prefix(tokenizer) + list(tokenizer(text, add_special_tokens=False)["input_ids"])
        output = generate_text(model, tokenizer, ids, max_new_tokens)
        target = row["topics"][0]
        rec = {"num_topics": int(row.get("num_topics", len(row["topics"]))), "tokens": len(ids), "output": output,
               "accuracy": S.substring_match(output, target), "qa_f1": S.qa_f1_score(output, target)}
        groups.setdefault(rec["num_topics"], []).append(rec)
    summary = {
        str(k): {"tokens": sum(r["tokens"] for r in v) / len(v), "accuracy": sum(r["accuracy"] for r in v) / len(v),
                 "qa_f1": sum(r["qa_f1"] for r in v) / len(v), "n": len(v)}
        for k, v in sorted(groups.items())
    }
    records = [r for v in groups.values() for r in v]
    return {"task": "topic", "groups": summary, "accuracy": sum(r["accuracy"] for r in records) / max(len(records), 1),
            "records": records}


__all__ = ["eval_needle", "eval_passkey", "eval_perplexity", "eval_topic", "perplexity_by_length", "sliding_windows"]
