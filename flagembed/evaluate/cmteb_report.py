"""C-MTEB results: per-task scores, per-type averages (the C-MTEB README's table), JSON, markdown and a plot."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from flagembed._io import atomic_write, save_json
from flagembed.evaluate.report import EvalResult

TYPE_ORDER: tuple[str, ...] = ("Retrieval", "STS", "PairClassification", "Classification", "Reranking", "Clustering")


@dataclass
class TaskScore:
    """The outcome of one task: its main score (a fraction) or why it did not run."""

    task: str
    type: str
    split: str
    main_score: str
    score: float | None
    source: Literal["local", "mteb", "unavailable"]
    instruction: str | None = None
    note: str = ""
    official: bool = True
    result: EvalResult | None = dataclasses.field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record (without the full evaluator result)."""
        d = dataclasses.asdict(self)
        d.pop("result")
        return d


@dataclass
class CMTEBReport:
    """All task outcomes of one model; averages count official C-MTEB tasks that produced a score."""

    model: str
    dim: int | None
    scores: list[TaskScore]

    def averages(self) -> dict[str, float | None]:
        """``Avg`` over every scored official task and one mean per task type (None where nothing ran)."""
        official = [s for s in self.scores if s.official and s.score is not None]
        out: dict[str, float | None] = {"Avg": _mean([s.score for s in official])}  # type: ignore[misc]
        for kind in TYPE_ORDER:
            out[kind] = _mean([s.score for s in official if s.type == kind])  # type: ignore[misc]
        return out

    def counts(self) -> dict[str, tuple[int, int]]:
        """Per type (and ``Avg``): (tasks scored, tasks asked for) among official tasks."""
        official = [s for s in self.scores if s.official]
        out = {"Avg": (sum(s.score is not None for s in official), len(official))}
        for kind in TYPE_ORDER:
            of_kind = [s for s in official if s.type == kind]
            out[kind] = (sum(s.score is not None for s in of_kind), len(of_kind))
        return out

    def markdown(self) -> str:
        """The README-style summary (×100) with scored/asked counts, then one table per task type."""
        avg, counts = self.averages(), self.counts()
        cols = ["Avg", *TYPE_ORDER]
        lines = [
            "| Model | Embedding dimension | " + " | ".join(cols) + " |",
            "|---|---|" + "---|" * len(cols),
            f"| {self.model} | {self.dim or ''} | " + " | ".join(_cell(avg[c]) for c in cols) + " |",
            "| (tasks scored / asked) | | " + " | ".join(f"{counts[c][0]}/{counts[c][1]}" for c in cols) + " |",
            "",
            "| Task | Type | Split | Main score | Score | Source | Query instruction |",
            "|---|---|---|---|---|---|---|",
        ]
        order = {k: i for i, k in enumerate(TYPE_ORDER)}
        for s in sorted(self.scores, key=lambda s: (not s.official, order.get(s.type, 99))):
            name = s.task if s.official else f"{s.task} (local extra, not in the averages)"
            source = s.source if s.score is not None else f"unavailable: {s.note}"
            inst = s.instruction if s.instruction else "-"
            lines.append(f"| {name} | {s.type} | {s.split} | {s.main_score} | {_cell(s.score)} | {source} | {inst} |")
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary: averages (fractions), counts, and every task outcome."""
        return {
            "model": self.model,
            "dim": self.dim,
            "averages": self.averages(),
            "counts": {k: list(v) for k, v in self.counts().items()},
            "tasks": [s.to_dict() for s in self.scores],
        }

    def plot(self, path: str | os.PathLike[str]) -> Path:
        """PNG: one bar per scored task (×100), coloured by type, with the per-type averages in the legend."""
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError('plotting needs matplotlib: pip install "flagembed[eval]"') from exc
        scored = [s for s in self.scores if s.score is not None]
        if not scored:
            raise ValueError("no task produced a score; nothing to plot")
        avg = self.averages()
        colors = dict(zip(TYPE_ORDER, ("C0", "C1", "C2", "C3", "C4", "C5")))
        fig, ax = plt.subplots(figsize=(7, 0.4 * len(scored) + 1.5))
        labels = [s.task if s.official else f"{s.task}*" for s in scored]
        ax.barh(labels, [100 * s.score for s in scored], color=[colors.get(s.type, "grey") for s in scored])
        for kind in TYPE_ORDER:
            if avg[kind] is not None:
                ax.bar(0, 0, color=colors[kind], label=f"{kind}: avg {100 * avg[kind]:.2f}")
        ax.invert_yaxis()
        ax.set_xlabel("main score ×100")
        title = f"C-MTEB, {self.model}" + (f": Avg {100 * avg['Avg']:.2f}" if avg["Avg"] is not None else "")
        ax.set_title(title + (" (* local extra)" if any(not s.official for s in scored) else ""), fontsize=9)
        ax.legend(fontsize=7, loc="lower right")
        ax.grid(True, axis="x", alpha=0.3)
        with atomic_write(path, "wb") as f:
            fig.savefig(f, format="png", dpi=120, bbox_inches="tight")
        plt.close(fig)
        return Path(path)

    def save(self, output_dir: str | os.PathLike[str], *, plot: bool = True) -> list[Path]:
        """Write ``cmteb_results.json``, ``cmteb_results.md`` (and ``cmteb.png``) under ``output_dir``."""
        out = Path(output_dir)
        save_json(out / "cmteb_results.json", self.to_dict())
        with atomic_write(out / "cmteb_results.md", "w") as f:
            f.write(self.markdown())
        paths = [out / "cmteb_results.json", out / "cmteb_results.md"]
        if plot and any(s.score is not None for s in self.scores):
            paths.append(self.plot(out / "cmteb.png"))
        return paths


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _cell(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.2f}"
