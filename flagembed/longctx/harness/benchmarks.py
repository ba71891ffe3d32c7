"""LongBench and InfiniteBench on data in a local folder: official prompts, middle truncation, official scores.

LongBench layout: ``<folder>/<task>.jsonl`` (or ``<folder>/data/<task>.jsonl``) with ``input``, ``context``,
``answers``, ``all_classes``. InfiniteBench layout: ``<folder>/<task>.jsonl`` with ``context``, ``input``,
``answer`` (str or list) and ``options``. Nothing is downloaded; a missing file raises FileNotFoundError.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from flagembed.longctx.harness import scorers as S
from flagembed.longctx.harness.prompts import chat_ids, special_prefix
from flagembed.longctx.harness.runner import generate_text

_MQA = (
    "Answer the question based on the given passages. Only give me the answer and do not output any other words.\n\n"
    "The following are given passages.\n{context}\n\nAnswer the question based on the given passages. Only give me "
    "the answer and do not output any other words.\n\nQuestion: {input}\nAnswer:"
)
_QASPER_RULE = (
    "as concisely as you can, using a single phrase or sentence if possible. If the question cannot be answered "
    'based on the information in the article, write "unanswerable". If the question is a yes/no question, answer '
    '"yes", "no", or "unanswerable". Do not provide any explanation.'
)
LONGBENCH_PROMPTS = {
    "narrativeqa": (
        "You are given a story, which can be either a novel or a movie script, and a question. Answer the question "
        "asconcisely as you can, using a single phrase if possible. Do not provide any explanation.\n\nStory: "
        "{context}\n\nNow, answer the question based on the story asconcisely as you can, using a single phrase if "
        "possible. Do not provide any explanation.\n\nQuestion: {input}\n\nAnswer:"
    ),
    "qasper": (
        f"You are given a scientific article and a question. Answer the question {_QASPER_RULE}\n\nArticle: "
        f"{{context}}\n\n Answer the question based on the above article {_QASPER_RULE}\n\nQuestion: {{input}}\n\n"
        "Answer:"
    ),
    "multifieldqa_en": (
        "Read the following text and answer briefly.\n\n{context}\n\nNow, answer the following question based on "
        "the above text, only give me the answer and do not output any other words.\n\nQuestion: {input}\nAnswer:"
    ),
    "hotpotqa": _MQA,
    "2wikimqa": _MQA,
    "musique": _MQA,
    "gov_report": (
        "You are given a report by a government agency. Write a one-page summary of the report.\n\nReport:\n"
        "{context}\n\nNow, write a one-page summary of the report.\n\nSummary:"
    ),
    "qmsum": (
        "You are given a meeting transcript and a query containing a question or instruction. Answer the query in "
        "one or more sentences.\n\nTranscript:\n{context}\n\nNow, answer the query based on the above meeting "
        "transcript in one or more sentences.\n\nQuery: {input}\nAnswer:"
    ),
    "multi_news": (
        "You are given several news passages. Write a one-page summary of all news. \n\nNews:\n{context}\n\nNow, "
        "write a one-page summary of all the news.\n\nSummary:"
    ),
    "trec": (
        "Please determine the type of the question below. Here are some examples of questions.\n\n{context}\n{input}"
    ),
    "triviaqa": (
        "Answer the question based on the given passage. Only give me the answer and do not output any other words. "
        "The following are some examples.\n\n{context}\n\n{input}"
    ),
    "samsum": (
        "Summarize the dialogue into a few short sentences. The following are some examples.\n\n{context}\n\n{input}"
    ),
    "passage_count": (
        "There are some paragraphs below sourced from Wikipedia. Some of them may be duplicates. Please carefully "
        "read these paragraphs and determine how many unique paragraphs there are after removing duplicates. In "
        "other words, how many non-repeating paragraphs are there in total?\n\n{context}\n\nPlease enter the final "
        "count of unique paragraphs after removing duplicates. The output format should only contain the number, "
        "such as 1, 2, 3, and so on.\n\nThe final answer is: "
    ),
    "passage_retrieval_en": (
        "Here are 30 paragraphs from Wikipedia, along with an abstract. Please determine which paragraph the abstract "
        "is from.\n\n{context}\n\nThe following is an abstract.\n\n{input}\n\nPlease enter the number of the "
        'paragraph that the abstract is from. The answer format must be like "Paragraph 1", "Paragraph 2", etc.\n\n'
        "The answer is: "
    ),
    "lcc": "Please complete the code given below. \n{context}Next line of code:\n",
    "repobench-p": "Please complete the code given below. \n{context}{input}Next line of code:\n",
}
LONGBENCH_MAX_NEW_TOKENS = {
    "narrativeqa": 128, "qasper": 128, "multifieldqa_en": 64, "hotpotqa": 32, "2wikimqa": 32, "musique": 32,
    "gov_report": 512, "qmsum": 512, "multi_news": 512, "trec": 64, "triviaqa": 32, "samsum": 128,
    "passage_count": 32, "passage_retrieval_en": 32, "lcc": 64, "repobench-p": 64,
}
_QA = ("narrativeqa", "qasper", "multifieldqa_en", "hotpotqa", "2wikimqa", "musique", "triviaqa")
LONGBENCH_METRICS: dict[str, Callable[..., float]] = {
    **{t: S.qa_f1_score for t in _QA},
    **{t: S.rouge_score for t in ("gov_report", "qmsum", "multi_news", "samsum")},
    "trec": S.classification_score,
    "passage_count": S.count_score,
    "passage_retrieval_en": S.retrieval_score,
    "lcc": S.code_sim_score,
    "repobench-p": S.code_sim_score,
}
LONGBENCH_CATEGORIES = {
    "Single-Doc QA": ("narrativeqa", "qasper", "multifieldqa_en"),
    "Multi-Doc QA": ("hotpotqa", "2wikimqa", "musique"),
    "Summarization": ("gov_report", "qmsum", "multi_news"),
    "Few-shot": ("trec", "triviaqa", "samsum"),
    "Synthetic": ("passage_count", "passage_retrieval_en"),
    "Code": ("lcc", "repobench-p"),
}
NO_CHAT = ("trec", "triviaqa", "samsum", "lcc", "repobench-p")  # few-shot and code prompts stay raw
FIRST_LINE = ("trec", "triviaqa", "samsum")  # the official scorer keeps the first output line only
NEWLINE_EOS = ("2wikimqa", "hotpotqa", "musique", "multifieldqa_en", "qasper", "narrativeqa", "samsum")


def read_rows(folder: str | Path, task: str, limit: int | None = None) -> list[dict[str, Any]]:
    """The rows of ``<folder>/<task>.jsonl`` (or ``<folder>/data/<task>.jsonl``), at most ``limit``."""
    folder = Path(folder)
    for path in (folder / f"{task}.jsonl", folder / "data" / f"{task}.jsonl"):
        if path.is_file():
            rows = []
            with open(path, encoding="utf-8") as fh:
                for n, line in enumerate(fh, 1):
                    if line.strip():
                        try:
                            rows.append(json.loads(line))
                        except json.JSONDecodeError as exc:
                            raise ValueError(f"{path}:{n}: not JSON ({exc.msg})") from None
                    if limit is not None and len(rows) >= limit:
                        break
            return rows
    raise FileNotFoundError(f"no {task}.jsonl in {folder} (nor in {folder / 'data'})")


def truncate_middle(tokenizer: Any, text: str, max_length: int) -> str:
    """Keep the first and the last ``max_length // 2`` tokens of ``text`` (LongBench's truncation)."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) <= max_length:
        return text
    half = max_length // 2
    return tokenizer.decode(ids[:half], skip_special_tokens=True) + tokenizer.decode(ids[-half:],
                                                                                     skip_special_tokens=True)


def encode_prompt(tokenizer: Any, text: str, chat: bool) -> list[int]:
    """Token ids of a prompt, wrapped as one user turn when ``chat`` and the tokenizer has a template."""
    if chat and getattr(tokenizer, "chat_template", None):
        return chat_ids(tokenizer, text)
    return special_prefix(tokenizer) + list(tokenizer(text, add_special_tokens=False)["input_ids"])


def score_longbench(task: str, predictions: Sequence[str], rows: Sequence[dict[str, Any]]) -> float:
    """The official per-task score (×100, two decimals): mean over rows of the best match over the answers."""
    if task not in LONGBENCH_METRICS:
        raise ValueError(f"unknown LongBench task {task!r}; known: {', '.join(LONGBENCH_METRICS)}")
    metric, total = LONGBENCH_METRICS[task], 0.0
    for pred, row in zip(predictions, rows, strict=True):
        if task in FIRST_LINE:
            pred = pred.lstrip("\n").split("\n")[0]
        total += S.best_of(metric, pred, row["answers"], all_classes=row.get("all_classes"))
    return round(100 * total / max(len(rows), 1), 2)


def _cut_at_newline(task: str, text: str) -> str:
    return text.split("\n")[0] if task in NEWLINE_EOS and text.strip() else text


def eval_longbench(model: Any, tokenizer: Any, folder: str | Path, tasks: Sequence[str] | None = None, *,
                   max_length: int = 31500, limit: int | None = None, chat: bool = True) -> dict[str, Any]:
    """Official-prompt LongBench on a local copy: per-task scores, category means and ``avg`` (mean of tasks).

    The reference stops QA generations at "\\n"; here the output is cut at its first newline for those tasks.
    """
    tasks = list(tasks or [t for t in LONGBENCH_PROMPTS if _has(folder, t)])
    if not tasks:
        raise FileNotFoundError(f"no LongBench task file in {folder}")
    scores, outputs = {}, {}
    for task in tasks:
        if task not in LONGBENCH_PROMPTS:
            raise ValueError(f"unknown LongBench task {task!r}; known: {', '.join(LONGBENCH_PROMPTS)}")
        rows = read_rows(folder, task, limit)
        preds = []
        for row in rows:
            text = truncate_middle(tokenizer, LONGBENCH_PROMPTS[task].format(**row), max_length)
            ids = encode_prompt(tokenizer, text, chat and task not in NO_CHAT)
            preds.append(_cut_at_newline(task, generate_text(model, tokenizer, ids, LONGBENCH_MAX_NEW_TOKENS[task])))
        scores[task], outputs[task] = score_longbench(task, preds, rows), preds
    categories = {
        name: round(sum(scores[t] for t in members if t in scores) / n, 2)
        for name, members in LONGBENCH_CATEGORIES.items()
        if (n := sum(t in scores for t in members))
    }
    return {"task": "longbench", "scores": scores, "categories": categories,
            "avg": round(sum(scores.values()) / len(scores), 2), "outputs": outputs}


def _has(folder: str | Path, task: str) -> bool:
    folder = Path(folder)
    return (folder / f"{task}.jsonl").is_file() or (folder / "data" / f"{task}.jsonl").is_file()


# InfiniteBench, the YaRN-Mistral prompt set the reference evaluates with (``--prompt mistral``)
INFBENCH_PROMPTS = {
    "longbook_qa_eng": (
        "Read the book and answer the question. Be very concise in your answer.\n\n{context}\n\nQuestion: {input}\n"
        "Answer:"
    ),
    "longbook_sum_eng": "Summarize the book below.\n\n{context}\n\nSummary:",
    "longbook_choice_eng": (
        "Read the book and answer the question.\n\n{context}\n\nQuestion: {input}\nA. {option_a}\nB. {option_b}\n"
        "C. {option_c}\nD. {option_d}\n\nThe letter of the correct answer is"
    ),
    "passkey": (
        "There is an important info hidden inside a lot of irrelevant text. Find it and memorize it. I will quiz you "
        "about the important information.\n\n{context}\n\n{input}\n\nThe pass key is"
    ),
    "number_string": (
        "There is an important info hidden inside a lot of irrelevant text. Find it. I will quiz you about the "
        "important information there.\n\n{context}\n\n{input}\n\nThe sequence of digits is"
    ),
    "kv_retrieval": (
        "Extract the value corresponding to the specified key in the JSON object below.\n\n{context}\n\n{input}"
    ),
}
INFBENCH_MAX_NEW_TOKENS = {"longbook_qa_eng": 40, "longbook_sum_eng": 1200, "longbook_choice_eng": 40, "passkey": 6,
                           "number_string": 12, "kv_retrieval": 50}


def _digits_match(prediction: str, ground_truth: str, **kwargs: Any) -> float:
    return float(S.first_integer(prediction) == str(ground_truth).strip())


def _choice_match(prediction: str, ground_truth: str, **kwargs: Any) -> float:
    options = kwargs.get("options") or []
    letter = "ABCD"[options.index(ground_truth)] if ground_truth in options else ground_truth.strip()
    head = prediction.strip()[:1].upper()
    return float(head == letter or ground_truth.strip().lower() in prediction.lower())


INFBENCH_METRICS: dict[str, Callable[..., float]] = {
    "longbook_qa_eng": S.qa_f1_score, "longbook_sum_eng": S.rouge_score, "longbook_choice_eng": _choice_match,
    "passkey": _digits_match, "number_string": _digits_match, "kv_retrieval": S.substring_match,
}


def infbench_prompt(task: str, row: dict[str, Any]) -> str:
    """The prompt text of one InfiniteBench row (options spread into ``option_a``..``option_d``)."""
    if task not in INFBENCH_PROMPTS:
        raise ValueError(f"unknown InfiniteBench task {task!r}; known: {', '.join(INFBENCH_PROMPTS)}")
    fields = dict(row)
    for letter, option in zip("abcd", row.get("options") or []):
        fields[f"option_{letter}"] = option
    return INFBENCH_PROMPTS[task].format(**fields)


def score_infbench(task: str, predictions: Sequence[str], rows: Sequence[dict[str, Any]]) -> float:
    """Mean in [0, 1] of the best match over a row's answers."""
    metric = INFBENCH_METRICS[task]
    total = sum(S.best_of(metric, p, r["answer"], options=r.get("options")) for p, r in zip(predictions, rows,
                                                                                              strict=True))
    return total / max(len(rows), 1)


def eval_infbench(model: Any, tokenizer: Any, folder: str | Path, tasks: Sequence[str] = ("longbook_qa_eng",), *,
                  max_length: int = 128000, limit: int | None = None, chat: bool = True) -> dict[str, Any]:
    """InfiniteBench on a local copy: per-task scores in [0, 1] and their mean."""
    scores, outputs = {}, {}
    for task in tasks:
        rows = read_rows(folder, task, limit)
        preds = []
        for row in rows:
            ids = encode_prompt(tokenizer, truncate_middle(tokenizer, infbench_prompt(task, row), max_length), chat)
            preds.append(generate_text(model, tokenizer, ids, INFBENCH_MAX_NEW_TOKENS[task]))
        scores[task], outputs[task] = score_infbench(task, preds, rows), preds
    return {"task": "infbench", "scores": scores, "avg": sum(scores.values()) / len(scores), "outputs": outputs}


__all__ = [
    "INFBENCH_PROMPTS",
    "LONGBENCH_CATEGORIES",
    "LONGBENCH_METRICS",
    "LONGBENCH_PROMPTS",
    "eval_infbench",
    "eval_longbench",
    "infbench_prompt",
    "read_rows",
    "score_infbench",
    "score_longbench",
    "truncate_middle",
]
