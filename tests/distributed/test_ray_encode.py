"""Ray Data encoding tests, run in their own pytest process.

A Ray driver that has connected and shut down can end the hosting process later (Ray's core worker exits it
when its raylet goes away), which silently killed the rest of the suite. The cases live in ``ray_cases.py``
(not collected here) and run in a child pytest, so the suite's own process never imports Ray.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="ray is not installed")
def test_ray_cases_in_their_own_process():
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", str(HERE / "ray_cases.py")]
    proc = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True,
                          timeout=1800)  # fmt: skip
    out = proc.stdout[-6000:] + proc.stderr[-2000:]
    assert proc.returncode == 0, out
    assert " passed" in proc.stdout and " failed" not in proc.stdout, out
