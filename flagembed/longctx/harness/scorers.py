"""Scorers of the long-context benchmarks, written from the official LongBench / InfiniteBench metric code.

``qa_f1_score``, ``classification_score``, ``count_score``, ``retrieval_score`` and ``code_sim_score`` follow
LongBench's ``metrics.py`` line by line (including the classification quirk of removing from the list being
iterated). Two differences, both because the packages are not dependencies: ``fuzz_ratio`` is the Indel
similarity (rapidfuzz's ``fuzz.ratio``; fuzzywuzzy's difflib ratio can differ by a point on long strings), and
``rouge_l`` is the sentence-level LCS ROUGE-L on lower-cased word tokens (the ``rouge`` package's ``rouge-l``
uses a summary-level union LCS over "."-split sentences, equal for single-sentence texts).
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence
from typing import Any


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower case, no punctuation, no articles (a/an/the), single spaces."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def _f1(pred_tokens: Sequence[str], gold_tokens: Sequence[str]) -> float:
    common = Counter(pred_tokens) & Counter(gold_tokens)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_tokens), same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def qa_f1_score(prediction: str, ground_truth: str, **kwargs: Any) -> float:
    """Token F1 after :func:`normalize_answer` (LongBench ``qa_f1_score``)."""
    return _f1(normalize_answer(prediction).split(), normalize_answer(ground_truth).split())


def _lcs(a: Sequence[Any], b: Sequence[Any]) -> int:
    if not a or not b:
        return 0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(prediction: str, reference: str) -> dict[str, float]:
    """ROUGE-L precision, recall and F1 of the longest common word subsequence (lower-cased words)."""
    pred = re.findall(r"\w+", prediction.lower())
    ref = re.findall(r"\w+", reference.lower())
    lcs = _lcs(pred, ref)
    if lcs == 0:
        return {"p": 0.0, "r": 0.0, "f": 0.0}
    p, r = lcs / len(pred), lcs / len(ref)
    return {"p": p, "r": r, "f": 2 * p * r / (p + r)}


def rouge_score(prediction: str, ground_truth: str, **kwargs: Any) -> float:
    """ROUGE-L F (LongBench ``rouge_score``)."""
    return rouge_l(prediction, ground_truth)["f"]


def classification_score(prediction: str, ground_truth: str, **kwargs: Any) -> float:
    """LongBench ``classification_score``: 1/k when the gold class is among the k classes named in the output."""
    em_match_list = [name for name in kwargs["all_classes"] if name in prediction]
    for match_term in em_match_list:  # the official code removes while iterating; kept for identical scores
        if match_term in ground_truth and match_term != ground_truth:
            em_match_list.remove(match_term)
    return 1.0 / len(em_match_list) if ground_truth in em_match_list else 0.0


def count_score(prediction: str, ground_truth: str, **kwargs: Any) -> float:
    """Share of the numbers in the output that equal the gold count (LongBench ``count_score``)."""
    numbers = re.findall(r"\d+", prediction)
    return sum(str(n) == str(ground_truth) for n in numbers) / len(numbers) if numbers else 0.0


def retrieval_score(prediction: str, ground_truth: str, **kwargs: Any) -> float:
    """Share of the numbers in the output that equal the gold "Paragraph k" (LongBench ``retrieval_score``)."""
    gold = re.findall(r"Paragraph (\d+)", ground_truth)[0]
    numbers = re.findall(r"\d+", prediction)
    return sum(str(n) == str(gold) for n in numbers) / len(numbers) if numbers else 0.0


def fuzz_ratio(a: str, b: str) -> float:
    """Indel similarity in [0, 100]: 100 · 2·LCS(chars) / (len a + len b), as rapidfuzz's ``fuzz.ratio``."""
    if not a and not b:
        return 100.0
    return 100.0 * 2 * _lcs(a, b) / (len(a) + len(b))


def code_sim_score(prediction: str, ground_truth: str, **kwargs: Any) -> float:
    """Similarity of the first output line that is not a comment or a code fence (LongBench ``code_sim_score``)."""
    line = ""
    for candidate in prediction.lstrip("\n").split("\n"):
        if "`" not in candidate and "#" not in candidate and "//" not in candidate:
            line = candidate
            break
    return fuzz_ratio(line, ground_truth) / 100


def first_integer(text: str) -> str | None:
    """The first run of digits in ``text`` (the passkey parser), or None."""
    match = re.search(r"\d+", text)
    return match.group(0) if match else None


def passkey_score(prediction: str, key: str) -> dict[str, float]:
    """Exact match of the first integer of the output with the key, and its fuzz ratio in [0, 1]."""
    found = first_integer(prediction)
    if found is None:
        return {"accuracy": 0.0, "fuzz": 0.0}
    return {"accuracy": float(found == key), "fuzz": fuzz_ratio(found, key) / 100}


def needle_score(prediction: str, needle: str) -> float:
    """ROUGE-L recall of the first non-empty output line against the needle (the reference's needle metric)."""
    lines = [line for line in prediction.strip().split("\n") if line.strip()]
    return rouge_l(lines[0] if lines else "", needle)["r"]


def substring_match(prediction: str, ground_truth: str, **kwargs: Any) -> float:
    """1 when the lower-cased gold text occurs in the lower-cased output (topic retrieval, InfiniteBench kv)."""
    return float(ground_truth.strip().lower() in prediction.lower())


def best_of(metric: Any, prediction: str, answers: str | Sequence[str], **kwargs: Any) -> float:
    """The maximum of ``metric`` over the gold answers (a single string counts as one answer)."""
    golds = [answers] if isinstance(answers, str) else list(answers)
    if not golds:
        raise ValueError("no gold answers to score against")
    return max(metric(prediction, str(g), **kwargs) for g in golds)


__all__ = [
    "best_of",
    "classification_score",
    "code_sim_score",
    "count_score",
    "first_integer",
    "fuzz_ratio",
    "needle_score",
    "normalize_answer",
    "passkey_score",
    "qa_f1_score",
    "retrieval_score",
    "rouge_l",
    "rouge_score",
    "substring_match",
]
