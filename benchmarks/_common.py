"""Shared helpers for benchmark scripts (data loading, timing, table output). Not part of the package."""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def scifact_docs(n: int) -> list[str]:
    """The first ``n`` SciFact abstracts as ``title + " " + text`` (BEIR/MTEB document text)."""
    path = SHARED / "scifact-train" / "corpus.jsonl"
    if not path.is_file():
        raise SystemExit(f"missing {path}: the benchmark needs ../shared/data")
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            out.append(f"{d['title']} {d['text']}".strip())
            if len(out) >= n:
                break
    return out


def timed(fn: Callable[[], Any], repeat: int = 1) -> tuple[float, Any]:
    """Best wall time over ``repeat`` runs and the last result."""
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def print_table(header: list[str], rows: list[list[Any]]) -> None:
    cells = [[str(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(header)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    print("  ".join("-" * w for w in widths))
    for r in cells:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)))


def write_json(name: str, payload: dict[str, Any]) -> Path:
    out_dir = ROOT / "bench_results"
    out_dir.mkdir(exist_ok=True)
    payload = {
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        **payload,
    }
    path = out_dir / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2))
    return path
