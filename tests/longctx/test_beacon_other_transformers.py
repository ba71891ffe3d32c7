"""The beacon equivalences under a second transformers (4.57) in FLAGEMBED_REF_PYTHON; skipped when absent."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REF = os.environ.get("FLAGEMBED_REF_PYTHON")


@pytest.mark.slow
@pytest.mark.skipif(not REF or not Path(REF).is_file(), reason="FLAGEMBED_REF_PYTHON unset or missing")
def test_equivalences_on_reference_transformers():
    env = {**os.environ, "PYTHONPATH": f"{HERE.parents[1]}{os.pathsep}{HERE}", "HF_HUB_OFFLINE": "1"}
    res = subprocess.run([REF, str(HERE / "beacon_ref_check.py")], capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "OK transformers 4." in res.stdout or "OK transformers" in res.stdout
