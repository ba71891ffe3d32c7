"""Peak memory: mix_models_by_layers stays well below two model copies (RSS sampled in a fresh process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

if not Path("/proc/self/statm").is_file():
    pytest.skip("needs /proc (Linux) to sample resident memory", allow_module_level=True)
import tiny_merge
import tiny_models

# Runs in a fresh interpreter: warm every code path on tiny models, then report the peak-RSS increase of one merge.
SCRIPT = """
import json, os, sys, threading, time
from flagembed.merge import mix_models, mix_models_by_layers
fn = {"mix_models": mix_models, "mix_models_by_layers": mix_models_by_layers}[sys.argv[1]]
big, tiny, out = json.loads(sys.argv[2]), json.loads(sys.argv[3]), sys.argv[4]
page = os.sysconf("SC_PAGE_SIZE")
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * page
fn(tiny, "encoder", [0.5, 0.5], out + "-warm", return_model=False)
peak, done = [0], threading.Event()
def watch():
    while not done.is_set():
        peak[0] = max(peak[0], rss())
        time.sleep(0.002)
before = rss()
t = threading.Thread(target=watch)
t.start()
t0 = time.perf_counter()
fn(big, "encoder", [1 / len(big)] * len(big), out, return_model=False)
seconds = time.perf_counter() - t0
done.set()
t.join()
print(json.dumps({"increase": max(peak[0], rss()) - before, "seconds": seconds}))
"""


@pytest.fixture(scope="module")
def big_models(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], list[Path], int]:
    root = tmp_path_factory.mktemp("big")
    # many mid-sized tensors (largest ~1 MB) so that "a few tensors" and "a model copy" are far apart
    big = [tiny_merge.build_big_bert(root / f"b{i}", seed=i, hidden=256, layers=12, vocab=1000) for i in range(3)]
    tiny = [tiny_models.build_bert(root / f"t{i}", seed=i) for i in range(2)]
    return big, tiny, (big[0] / "model.safetensors").stat().st_size


def _peak_increase(fn: str, big: list[Path], tiny: list[Path], out: Path) -> int:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            SCRIPT,
            fn,
            json.dumps([str(p) for p in big]),
            json.dumps([str(p) for p in tiny]),
            str(out),
        ],  # fmt: skip
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=True,
    )
    return int(json.loads(proc.stdout.strip().splitlines()[-1])["increase"])


def test_by_layers_peak_memory_stays_below_one_model(big_models, tmp_path):
    big, tiny, model_bytes = big_models
    assert model_bytes > 30e6
    streamed = _peak_increase("mix_models_by_layers", big, tiny, tmp_path / "b")
    in_memory = _peak_increase("mix_models", big, tiny, tmp_path / "a")
    # the measurement sees memory: mix_models holds 3 inputs + the output
    assert in_memory > 2.5 * model_bytes, (in_memory, model_bytes)
    # the acceptance bound is two copies; streaming tensor by tensor stays below even one
    assert streamed < model_bytes, (streamed, model_bytes)
