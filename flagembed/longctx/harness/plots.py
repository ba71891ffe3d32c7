"""PNG figures of harness results (matplotlib with the Agg backend, imported only when drawing)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from flagembed._io import atomic_write


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as exc:  # an optional extra
        raise ImportError('plots need matplotlib: pip install "flagembed[eval]" or pip install matplotlib') from exc
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str | os.PathLike[str]) -> None:
    with atomic_write(path) as fh:
        fig.savefig(fh, format="png", dpi=120, bbox_inches="tight")


def plot_heatmap(result: dict[str, Any], path: str | os.PathLike[str], title: str | None = None) -> None:
    """The length × depth matrix of a passkey / needle result as a heat map (green = found)."""
    plt = _pyplot()
    matrix = [list(row) for row in result["matrix"]]
    fig, ax = plt.subplots(figsize=(1.0 + 0.6 * len(result["lengths"]), 1.0 + 0.45 * len(result["depths"])))
    im = ax.imshow(list(map(list, zip(*matrix))), cmap="RdYlGn", vmin=0.0, vmax=1.0, aspect="auto", origin="upper")
    ax.set_xticks(range(len(result["lengths"])), [str(n) for n in result["lengths"]], rotation=45)
    ax.set_yticks(range(len(result["depths"])), [str(d) for d in result["depths"]])
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel("depth (%)")
    ax.set_title(title or f"{result['task']}: {result['metric']} (mean {result['mean']:.2f})")
    fig.colorbar(im, ax=ax)
    _save(fig, path)
    plt.close(fig)


def plot_ppl(curves: dict[str, dict[str, Any]] | dict[str, Any], path: str | os.PathLike[str],
             title: str = "perplexity by context length") -> None:
    """Perplexity against length, one line per named result of :func:`perplexity_by_length`."""
    plt = _pyplot()
    if "lengths" in curves:
        curves = {"model": curves}
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, res in curves.items():
        lengths: Sequence[int] = res["lengths"]
        ax.plot(lengths, res["ppl"], marker="o", label=name)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel("perplexity")
    ax.set_title(title)
    ax.legend()
    _save(fig, path)
    plt.close(fig)


__all__ = ["plot_heatmap", "plot_ppl"]
