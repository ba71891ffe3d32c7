"""LLM-Embedder's teacher signal: how much a key helps a causal LM produce the answer (WAVE2_REFERENCE §2.5).

The score of key ``k`` for query ``q`` is minus the mean negative log-likelihood of the answer tokens
under the LM, given the task's prompt with ``k`` and ``q``; only answer tokens are labelled, no EOS is
added, the key is cut to ``key_max_tokens`` tokens, one answer per record (the first).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

# research/llm_embedder run_lm_score.py prompt templates; the answer follows the prompt directly.
# lrlm: plain token concatenation of the key chunk, the query chunk and the continuation.
LM_PROMPTS: dict[str, str] = {
    "qa": "Knowledge: {key}\n\nQuestion: {query}\n\nAnswer: ",
    "convsearch": "Knowledge: {key}\n\nQuestion: {query}\n\nAnswer: ",
    "icl": "{key}\n{query}\n",
    "chat": "{key}\nSpeaker 1: {query}\nSpeaker 2: ",
    "lrlm": "{key}{query}",
}


def _ids(tokenizer: Any, text: str, limit: int | None = None) -> list[int]:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return ids[:limit] if limit is not None else ids


def prompt_ids(
    tokenizer: Any, task: str, query: str, key: str, answer: str, key_max_tokens: int = 512
) -> tuple[list[int], int]:
    """Token ids of prompt + answer and the number of answer tokens (the last ones).

    Raises:
        ValueError: an unknown task or an empty answer.
    """
    if task not in LM_PROMPTS:
        raise ValueError(f"unknown task {task!r} for LM scoring; valid: {', '.join(LM_PROMPTS)}")
    answer_ids = _ids(tokenizer, answer)
    if not answer_ids:
        raise ValueError(f"answer {answer!r:.60} has no tokens")
    key = tokenizer.decode(_ids(tokenizer, key, key_max_tokens))
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    if task == "lrlm":
        head = bos + _ids(tokenizer, key) + _ids(tokenizer, query)
    else:
        head = bos + _ids(tokenizer, LM_PROMPTS[task].format(key=key, query=query))
    return head + answer_ids, len(answer_ids)


@torch.no_grad()
def answer_scores(model: Any, sequences: Sequence[tuple[list[int], int]], batch_size: int = 8) -> list[float]:
    """``-mean NLL`` of the last ``n`` tokens of each ``(ids, n)`` under a causal LM (right-padded batches)."""
    device = next(model.parameters()).device
    out: list[float] = []
    for start in range(0, len(sequences), batch_size):
        chunk = sequences[start : start + batch_size]
        width = max(len(ids) for ids, _ in chunk)
        ids = torch.zeros((len(chunk), width), dtype=torch.long)
        mask = torch.zeros_like(ids)
        labels = torch.full_like(ids, -100)
        for row, (seq, n) in enumerate(chunk):
            ids[row, : len(seq)] = torch.tensor(seq)
            mask[row, : len(seq)] = 1
            labels[row, len(seq) - n : len(seq)] = torch.tensor(seq[len(seq) - n :])
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
        shift_logits, shift_labels = logits[:, :-1], labels[:, 1:].to(device)
        nll = F.cross_entropy(shift_logits.transpose(1, 2), shift_labels, ignore_index=-100, reduction="none")
        counts = (shift_labels != -100).sum(dim=1)
        out.extend((-(nll.sum(dim=1) / counts)).tolist())
    return out


def lm_teacher_scores(
    model: Any,
    tokenizer: Any,
    examples: Sequence[dict[str, Any]],
    *,
    task: str | None = None,
    answer_field: str = "answers",
    key_max_tokens: int = 512,
    batch_size: int = 8,
) -> list[dict[str, Any]]:
    """Records with ``teacher_scores`` over ``pos + neg`` (and the same split into ``pos_scores``/``neg_scores``).

    The task is the record's ``task`` field, else ``task``.

    Raises:
        ValueError: a record without an answer or a task (names the record).
    """
    seqs: list[tuple[list[int], int]] = []
    for i, ex in enumerate(examples):
        answers = ex.get(answer_field)
        if isinstance(answers, str):
            answers = [answers]
        if not answers or not isinstance(answers[0], str):
            raise ValueError(f"record {i} has no {answer_field!r} (a list of answer strings) to score keys with")
        record_task = ex.get("task") or task
        if record_task is None:
            raise ValueError(f"record {i} has no 'task' field; pass task=")
        for key in [*ex["pos"], *ex.get("neg", [])]:
            seqs.append(prompt_ids(tokenizer, record_task, ex["query"], key, answers[0], key_max_tokens))
    scores = answer_scores(model, seqs, batch_size)
    out, k = [], 0
    for ex in examples:
        n_pos, n_neg = len(ex["pos"]), len(ex.get("neg", []))
        record = dict(ex)
        record["teacher_scores"] = scores[k : k + n_pos + n_neg]
        record["pos_scores"], record["neg_scores"] = scores[k : k + n_pos], scores[k + n_pos : k + n_pos + n_neg]
        k += n_pos + n_neg
        out.append(record)
    logger.info("LM-scored %d keys of %d records", len(seqs), len(examples))
    return out


def lm_score_file(
    lm: str,
    input_file: str,
    output_file: str,
    *,
    task: str | None = None,
    answer_field: str = "answers",
    key_max_tokens: int = 512,
    batch_size: int = 8,
    device: str | None = None,
    trust_remote_code: bool = False,
) -> int:
    """Add LM teacher scores to every record of a training jsonl file; returns the keys scored."""
    from transformers import AutoModelForCausalLM

    from flagembed._compat import from_pretrained
    from flagembed._io import check_output_file
    from flagembed.engine.devices import resolve_devices
    from flagembed.models import load_tokenizer, open_checkpoint
    from flagembed.train.data import read_examples, write_jsonl

    check_output_file(output_file)  # before the model loads
    examples = read_examples(input_file)
    path = open_checkpoint(lm, trust_remote_code=trust_remote_code).path
    tokenizer = load_tokenizer(path, trust_remote_code=trust_remote_code)
    model = from_pretrained(AutoModelForCausalLM, str(path), trust_remote_code=trust_remote_code)
    model = model.to(resolve_devices(device)[0]).eval()
    scored = lm_teacher_scores(
        model, tokenizer, examples, task=task, answer_field=answer_field, key_max_tokens=key_max_tokens,
        batch_size=batch_size,
    )  # fmt: skip
    write_jsonl(output_file, scored)
    return sum(len(r["teacher_scores"]) for r in scored)
