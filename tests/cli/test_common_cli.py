"""CLI-wide behaviour: --version, --device validation, OS errors and Ctrl-C in one line."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flagembed import __version__
from flagembed.cli import app, describe_os_error

runner = CliRunner()
FLAGEMBED = str(Path(sys.executable).parent / "flagembed")


def test_version():
    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0
    assert res.output.strip() == f"flagembed {__version__}"


@pytest.mark.parametrize(
    ("device", "message"),
    [("gpu0", "is not a device"), ("cuda:7", "CUDA"), ("cpu,foo", "'foo' is not a device")],
)
def test_bad_device_is_one_line_before_any_model_loads(tmp_path, device, message):
    if "cuda" in device:
        import torch

        if torch.cuda.device_count() > 7:
            pytest.skip("this machine has 8 GPUs")
    args = ["embed", "-m", "no-such-model-folder/x", "-i", "in.txt", "-o", "o.npy", "--device", device]
    res = runner.invoke(app, args)
    assert res.exit_code == 2
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: --device:") and message in lines[0]


def test_describe_os_error():
    exc = PermissionError(errno.EACCES, os.strerror(errno.EACCES), "/ro/out.npy")
    assert describe_os_error(exc) == "cannot write /ro/out.npy: permission denied"
    assert describe_os_error(OSError(errno.EIO, "I/O error")) == "i/o error"


@pytest.mark.slow
def test_ctrl_c_prints_one_line_and_exits_130(tmp_path):
    """A real SIGINT while a command works: one line on stderr, no traceback, nothing written."""
    texts = tmp_path / "in.txt"
    texts.write_text("\n".join(f"sentence number {i} about cells" for i in range(20000)))
    out = tmp_path / "out.npy"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        [FLAGEMBED, "embed", "-m", "all-MiniLM-L6-v2", "-i", str(texts), "-o", str(out), "--batch-size", "8"],
        stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    time.sleep(12)  # imports and model load; then it is encoding
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines == [lines[-1]] and lines[-1].startswith("interrupted:"), err
    assert not out.exists() and not any(p.name.startswith(".out.npy") for p in tmp_path.iterdir())
