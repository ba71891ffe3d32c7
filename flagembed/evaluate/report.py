"""Evaluation results: one record per (model, reranker, dataset, split), JSON files, markdown tables, plots."""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from flagembed._io import atomic_write, save_json
from flagembed.evaluate.cache import config_hash

logger = logging.getLogger(__name__)

DISPLAY_SCALE = 100.0  # tables show metrics ×100 (MTEB's leaderboard convention); JSON keeps fractions
REPORT_NAME = "eval_results.md"
_EXTRA_METRICS = {"sts": ("cosine_pearson",), "retrieval": ("recall_at_100",)}


def display(value: float) -> str:
    """A metric as every console table and markdown report shows it: ×100 with 2 decimals (0.77583 -> "77.58")."""
    return f"{value * DISPLAY_SCALE:.2f}"


def flagembed_version() -> str:
    """The installed flagembed version (recorded in every result)."""
    from flagembed import __version__

    return __version__


@dataclass
class EvalResult:
    """Scores of one model (and optional reranker) on one dataset split, with the full configuration."""

    task: str  # retrieval, reranking, sts, pair_classification, classification, clustering
    dataset: str
    split: str
    model: str
    metrics: dict[str, float]  # MTEB names, fractions: ndcg_at_10, cosine_spearman, ...
    main_score: str
    config: dict[str, Any]  # model settings + evaluation arguments
    reranker: str | None = None
    mode: str | None = None  # retrieval mode: dense, sparse, colbert, hybrid
    per_query: dict[str, dict[str, float]] | None = None
    stats: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    search_results: dict[str, dict[str, float]] | None = field(default=None, repr=False)
    flagembed_version: str = field(default_factory=flagembed_version)

    @property
    def config_hash(self) -> str:
        """Hash of ``config`` (which model settings and evaluation arguments produced these numbers)."""
        return config_hash(self.config)

    @property
    def main(self) -> float:
        """The task's main metric value."""
        return self.metrics[self.main_score]

    def to_dict(self, *, with_search_results: bool = False) -> dict[str, Any]:
        """JSON-ready record (search results only on request: they can be large)."""
        d = asdict(self)
        if not with_search_results:
            d.pop("search_results")
        d["config_hash"] = self.config_hash
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EvalResult:
        """Inverse of :meth:`to_dict`."""
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", text.strip("/")).strip("_") or "model"


def result_path(result: EvalResult, output_dir: str | os.PathLike[str]) -> Path:
    """``<out>/<model>/<reranker or NoReranker>/<dataset>-<split>[-<mode>].json`` (FlagEmbedding's layout)."""
    name = f"{_slug(result.dataset)}-{_slug(result.split)}"
    if result.mode and result.mode != "dense":
        name += f"-{_slug(result.mode)}"
    return Path(output_dir) / _slug(result.model) / _slug(result.reranker or "NoReranker") / f"{name}.json"


def write_result(result: EvalResult, output_dir: str | os.PathLike[str], *, search_results: bool = False) -> Path:
    """Write the result JSON atomically; optionally the ranked lists beside it (``*.search.json``)."""
    path = result_path(result, output_dir)
    save_json(path, result.to_dict())
    if search_results and result.search_results is not None:
        save_json(path.with_suffix(".search.json"), result.search_results)
    logger.info("wrote %s", path)
    return path


def load_results(output_dir: str | os.PathLike[str]) -> list[EvalResult]:
    """Every result JSON under ``output_dir`` (ignores ``*.search.json``)."""
    out = []
    for p in sorted(Path(output_dir).rglob("*.json")):
        if p.name.endswith(".search.json"):
            continue
        try:
            d = json.loads(p.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{p}: not a readable result JSON ({exc})") from None
        if isinstance(d, dict) and "metrics" in d and "task" in d:
            out.append(EvalResult.from_dict(d))
    return out


def markdown_table(results: Sequence[EvalResult], metric: str | None = None) -> str:
    """A markdown table: rows (model, reranker[, mode]), columns datasets + average, values ×100, best bold.

    ``metric`` defaults to the first result's main score; results without it are left out.
    """
    if not results:
        raise ValueError("no results to tabulate")
    metric = metric or results[0].main_score
    columns = sorted({f"{r.dataset}-{r.split}" for r in results if metric in r.metrics})
    rows: dict[tuple[str, str], dict[str, float]] = {}
    for r in results:
        if metric not in r.metrics:
            continue
        label = r.model if not r.mode or r.mode == "dense" else f"{r.model} ({r.mode})"
        rows.setdefault((label, r.reranker or "NoReranker"), {})[f"{r.dataset}-{r.split}"] = r.metrics[metric]
    if not rows:
        raise ValueError(f"no result has metric {metric!r}")
    table = {k: {**v, "average": sum(v.values()) / len(v)} for k, v in rows.items()}
    cols = [*columns, "average"]
    best = {c: max((v[c] for v in table.values() if c in v), default=None) for c in cols}
    lines = [f"## {metric}", "", "| Model | Reranker | " + " | ".join(cols) + " |", "|---|---|" + "---|" * len(cols)]
    for (model, reranker), values in table.items():
        cells = []
        for c in cols:
            if c not in values:
                cells.append("")
                continue
            text = display(values[c])
            cells.append(f"**{text}**" if len(table) > 1 and values[c] == best[c] else text)
        lines.append(f"| {model} | {reranker} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_markdown(results: Sequence[EvalResult], path: str | os.PathLike[str], metrics: Sequence[str]) -> Path:
    """Write one table per metric into a markdown file (atomically)."""
    text = "\n".join(markdown_table(results, m) for m in metrics)
    with atomic_write(path, "w") as f:
        f.write(text)
    return Path(path)


def report_metrics(results: Sequence[EvalResult]) -> list[str]:
    """The metrics a report shows for results of one task: their main scores, then the task's extras present."""
    names = list(dict.fromkeys(r.main_score for r in results))
    if any(r.task == "retrieval" for r in results):
        names += [m.replace("ndcg_", "recall_") for m in names if m.startswith("ndcg_at_")]
    names += [m for r in results for m in _EXTRA_METRICS.get(r.task, ())]
    return [m for m in dict.fromkeys(names) if any(m in r.metrics for r in results)]


def write_report(output_dir: str | os.PathLike[str]) -> Path:
    """Regenerate ``<output_dir>/eval_results.md`` from every result JSON under ``output_dir``.

    One section per task, one table per metric (:func:`report_metrics`), so results of earlier runs into the
    same folder (other datasets, splits, models or tasks) stay in the report.
    """
    results = load_results(output_dir)
    if not results:
        raise ValueError(f"{output_dir}: no result JSON files to report")
    tasks = sorted({r.task for r in results})
    parts = []
    for task in tasks:
        group = [r for r in results if r.task == task]
        tables = "\n".join(markdown_table(group, m) for m in report_metrics(group))
        parts.append(f"# {task}\n\n{tables}")
    path = Path(output_dir) / REPORT_NAME
    with atomic_write(path, "w") as f:
        f.write("\n".join(parts))
    return path


def plot_curves(results: Sequence[EvalResult], path: str | os.PathLike[str], metric: str = "recall") -> Path:
    """PNG of ``<metric>@k`` against k for each retrieval result (needs matplotlib: ``flagembed[eval]``)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError('plotting needs matplotlib: pip install "flagembed[eval]"') from exc
    fig, ax = plt.subplots(figsize=(6, 4))
    drawn = 0
    for r in results:
        pts = sorted((int(k.rsplit("_", 1)[1]), v) for k, v in r.metrics.items() if k.startswith(f"{metric}_at_"))
        if pts:
            ax.plot([k for k, _ in pts], [v for _, v in pts], marker="o", label=f"{r.model} / {r.dataset}")
            drawn += 1
    if not drawn:
        plt.close(fig)
        raise ValueError(f"no result has {metric}_at_k metrics to plot")
    ax.set_xscale("log")
    ax.set_xlabel("k")
    ax.set_ylabel(f"{metric}@k")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    return Path(path)
