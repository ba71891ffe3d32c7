"""Shared helpers for benchmark scripts (data loading, timing, table output). Not part of the package."""

from __future__ import annotations

import argparse
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


def add_bf16_option(ap: argparse.ArgumentParser) -> None:
    """``--bf16/--no-bf16``: bf16 autocast in training; unset, it is resolved by :func:`training_bf16`."""
    help = "bf16 autocast in training (default: on where the CPU multiplies bf16 in hardware)"
    ap.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None, help=help)


def training_bf16(flag: bool | None) -> bool:
    """The ``--bf16`` choice, or (unset) whether this CPU multiplies bf16 in hardware (AMX or AVX512-BF16)."""
    if flag is not None:
        return flag
    from flagembed.engine.hardware import cpu_fast_bf16

    return cpu_fast_bf16()


def write_jsonl(path: Path, records: Any) -> Path:
    """One JSON object per line, written to a temp file and renamed (a cached file is never half-written)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return path


def contrastive_finetune(start: str | Path, data_file: Path, output_dir: Path, *, group_size: int, passage_max_len: int,
                         warmup_steps: int, **training: Any) -> Any:  # fmt: skip
    """``finetune_embedder`` with the recipe the benchmarks share: queries 64 tokens, a log every 5 steps, no
    checkpoints, CPU, seed 42, the last partial batch dropped. ``training``: further EmbedderTrainingArguments."""
    from flagembed.train import DataArguments, EmbedderTrainingArguments, ModelArguments, finetune_embedder

    return finetune_embedder(
        ModelArguments(model_name_or_path=str(start)),
        DataArguments(
            train_data=[str(data_file)], train_group_size=group_size, query_max_len=64, passage_max_len=passage_max_len
        ),
        EmbedderTrainingArguments(
            output_dir=str(output_dir), warmup_steps=warmup_steps, logging_steps=5, save_strategy="no",
            report_to="none", use_cpu=True, seed=42, dataloader_drop_last=True, **training,
        ),
    )  # fmt: skip


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
