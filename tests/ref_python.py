"""Run FlagEmbedding (the reference) in its own venv: ``FLAGEMBED_REF_PYTHON=/path/to/python``; skip when unset."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def ref_python() -> str:
    """The reference venv's interpreter, or skip the test."""
    exe = os.environ.get("FLAGEMBED_REF_PYTHON")
    if not exe:
        pytest.skip("FLAGEMBED_REF_PYTHON is not set (the reference FlagEmbedding venv)")
    if not Path(exe).is_file():
        pytest.skip(f"FLAGEMBED_REF_PYTHON={exe} does not exist")
    return exe


def run_ref(script: str, *args: str, timeout: float = 600) -> str:
    """Run ``script`` (Python source) with the reference interpreter; its stdout, or fail with its stderr."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run(
        [ref_python(), "-c", script, *args], capture_output=True, text=True, timeout=timeout, env=env, cwd="/"
    )
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        pytest.fail(f"reference script failed with exit status {proc.returncode}: {proc.stderr[-500:]}")
    return proc.stdout
