"""Short-context retention: MMLU-style multiple choice scored by answer likelihood (what an extension cost).

Layout (the MMLU release): ``<folder>/test/<subject>_test.csv`` and optionally ``<folder>/dev/<subject>_dev.csv``,
rows ``question, A, B, C, D, answer`` without a header; a single CSV file is read as one subject. The prompt is
the reference's; each option letter is appended as the answer (as an assistant turn when the tokenizer has a
chat template) and only the letter's tokens are scored; the prediction is the option with the lowest mean NLL.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from flagembed.longctx.harness.prompts import special_prefix
from flagembed.longctx.harness.runner import sequence_loss

LETTERS = ("A", "B", "C", "D")
HEADER = "The following are multiple choice questions (with answers) about {subject}.\n\n"


def read_mmlu(path: str | Path, split: str = "test") -> dict[str, list[list[str]]]:
    """``{subject: rows}`` from an MMLU folder (``<split>/<subject>_<split>.csv``) or one CSV file.

    Raises:
        FileNotFoundError: no CSV found. ValueError: a row without 4 options and a letter answer.
    """
    path = Path(path)
    files = [path] if path.is_file() else sorted((path / split).glob(f"*_{split}.csv")) or sorted(path.glob("*.csv"))
    if not files:
        raise FileNotFoundError(f"no MMLU CSV files in {path} (expected {split}/<subject>_{split}.csv)")
    out: dict[str, list[list[str]]] = {}
    for f in files:
        subject = f.stem.removesuffix(f"_{split}")
        rows = [r for r in csv.reader(f.open(encoding="utf-8", newline="")) if r]
        for i, r in enumerate(rows):
            if len(r) != 6 or r[5].strip() not in LETTERS:
                raise ValueError(f"{f} row {i}: expected question, 4 options and an answer letter A-D")
        out[subject] = rows
    return out


def format_question(row: list[str], with_answer: bool = False) -> str:
    """``question\\nA. ..\\nB. ..\\nC. ..\\nD. ..\\nAnswer:`` (plus `` X\\n\\n`` for a few-shot example)."""
    text = row[0] + "".join(f"\n{letter}. {opt}" for letter, opt in zip(LETTERS, row[1:5])) + "\nAnswer:"
    return text + f" {row[5].strip()}\n\n" if with_answer else text


def option_example(tokenizer: Any, prompt: str, letter: str) -> tuple[list[int], list[int]]:
    """Ids and labels scoring only ``letter`` after ``prompt`` (an assistant turn when a chat template exists)."""
    if getattr(tokenizer, "chat_template", None):
        head = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                             add_generation_prompt=True)
        ids = list(tokenizer(head, add_special_tokens=False)["input_ids"])
        answer = list(tokenizer(letter, add_special_tokens=False)["input_ids"])
    else:
        ids = special_prefix(tokenizer) + list(tokenizer(prompt, add_special_tokens=False)["input_ids"])
        answer = list(tokenizer(" " + letter, add_special_tokens=False)["input_ids"])
    return ids + answer, [-100] * len(ids) + answer


def eval_mmlu(model: Any, tokenizer: Any, path: str | Path, few_shot: int = 0, limit: int | None = None) -> dict[
        str, Any]:
    """Accuracy per subject and overall (macro over questions) by lowest answer NLL."""
    tests = read_mmlu(path, "test")
    devs = read_mmlu(path, "dev") if few_shot and Path(path).is_dir() and (Path(path) / "dev").is_dir() else {}
    per_subject: dict[str, dict[str, float]] = {}
    correct_all = total_all = 0
    for subject, rows in tests.items():
        header = HEADER.format(subject=subject.replace("_", " "))
        shots = "".join(format_question(r, True) for r in devs.get(subject, [])[:few_shot])
        correct = 0
        for row in rows[:limit]:
            prompt = header + shots + format_question(row)
            nll = [sequence_loss(model, *option_example(tokenizer, prompt, letter))[0] for letter in LETTERS]
            correct += int(LETTERS[nll.index(min(nll))] == row[5].strip())
        n = len(rows[:limit])
        per_subject[subject] = {"accuracy": correct / max(n, 1), "n": n}
        correct_all, total_all = correct_all + correct, total_all + n
    return {"task": "mmlu", "few_shot": few_shot, "subjects": per_subject,
            "accuracy": correct_all / max(total_all, 1), "n": total_all}


__all__ = ["eval_mmlu", "format_question", "option_example", "read_mmlu"]
