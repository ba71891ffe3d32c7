"""LLM-Embedder's per-task training recipe as data, and the group preparation it implies (§2.5)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np


@dataclass(frozen=True)
class TaskTrainConfig:
    """Per-task overrides (``TASK_CONFIG["llm-embedder"]["training"]``); ``None`` = the run's default."""

    select_positive: Literal["first", "random", "teacher"] = "first"
    contrastive_weight: float | None = None
    distill_weight: float | None = None
    teacher_temperature: float | None = None
    stable_distill: bool = False
    teacher_scores_margin: float | None = None


LLM_EMBEDDER_TRAIN_CONFIG: dict[str, TaskTrainConfig] = {
    "qa": TaskTrainConfig("first", contrastive_weight=0.0, stable_distill=True),
    "convsearch": TaskTrainConfig("first", distill_weight=0.0),
    "chat": TaskTrainConfig("teacher", contrastive_weight=0.0, distill_weight=1.0, teacher_temperature=0.1),
    "lrlm": TaskTrainConfig(
        "teacher", contrastive_weight=0.0, distill_weight=1.0, teacher_temperature=0.1, teacher_scores_margin=0.1
    ),
    "icl": TaskTrainConfig("random", contrastive_weight=0.0, stable_distill=True),
    "tool": TaskTrainConfig("first", distill_weight=0.0),
}


def task_config(task: str | None) -> TaskTrainConfig:
    """The recipe of ``task`` (``None``: the run's defaults).

    Raises:
        ValueError: an unknown task.
    """
    if task is None:
        return TaskTrainConfig()
    if task not in LLM_EMBEDDER_TRAIN_CONFIG:
        raise ValueError(f"unknown LLM-Embedder task {task!r}; valid: {', '.join(LLM_EMBEDDER_TRAIN_CONFIG)}")
    return LLM_EMBEDDER_TRAIN_CONFIG[task]


def prepare_group(item: dict[str, Any], config: TaskTrainConfig, rng: np.random.Generator) -> dict[str, Any]:
    """Reorder one sampled group for the task: pick the positive (``teacher``: highest teacher score;
    ``random``), and with stable distillation sort the negatives by teacher score, highest first."""
    texts, scores = list(item["passages"]), item.get("teacher_scores")
    if scores is None:
        return item
    scores = list(scores)
    order = list(range(len(texts)))
    if config.select_positive == "teacher":
        best = int(np.argmax(scores))
        order = [best] + [i for i in order if i != best]
    elif config.select_positive == "random":
        pick = int(rng.integers(len(texts)))
        order = [pick] + [i for i in order if i != pick]
    if config.stable_distill:
        order = [order[0]] + sorted(order[1:], key=lambda i: -scores[i])
    return {**item, "passages": [texts[i] for i in order], "teacher_scores": [scores[i] for i in order]}
