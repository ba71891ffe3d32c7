"""Device and dtype selection."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from typing import Literal

import torch

logger = logging.getLogger(__name__)

DType = Literal["auto", "fp32", "fp16", "bf16"]
_DTYPES = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "fp16": torch.float16,
    "float16": torch.float16,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
}

DeviceLike = str | int | torch.device | None


def resolve_devices(device: DeviceLike | Sequence[DeviceLike]) -> list[torch.device]:
    """All devices asked for: a list gives several (data parallelism), anything else one."""
    if isinstance(device, (list, tuple)):
        return [resolve_device(d) for d in device] or [resolve_device(None)]
    return [resolve_device(device)]


def resolve_device(device: DeviceLike | Sequence[DeviceLike]) -> torch.device:
    """Pick a device: ``None`` → first CUDA GPU, else MPS, else CPU; ints mean ``cuda:i``.

    For callers without data parallelism, a list of several devices uses the first, with a warning.
    """
    if isinstance(device, (list, tuple)):
        if len(device) > 1:
            warnings.warn(f"using only {device[0]!r} of {list(device)!r} here", stacklevel=3)
        device = device[0] if device else None
    if device is None:
        if torch.cuda.is_available():
            return torch.device("cuda:0")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if isinstance(device, int):
        device = f"cuda:{device}"
    return check_device(device)


def check_device(device: str | torch.device) -> torch.device:
    """Parse a device and check that this machine has it.

    Raises:
        ValueError: not a device name, or a device this machine does not have (naming what it has).
    """
    try:
        dev = device if isinstance(device, torch.device) else torch.device(str(device).strip())
    except (RuntimeError, ValueError):
        raise ValueError(f"device {str(device)!r} is not a device; use cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"device {str(device)!r}: this machine has no CUDA GPU usable by torch; use cpu")
        if dev.index is not None and dev.index >= count:
            raise ValueError(f"device {str(device)!r}: this machine has {count} CUDA GPU(s) (cuda:0..cuda:{count - 1})")
    elif dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError(f"device {str(device)!r}: MPS is not available on this machine; use cpu")
    return dev  # other torch device types (xpu, meta, ...) are left to torch


_warned_cpu_half = False


def resolve_dtype(
    dtype: DType | torch.dtype | None,
    device: torch.device,
    preferred: str = "fp16",
    *,
    cpu_bf16: bool = False,
) -> torch.dtype:
    """Parameter dtype: ``auto`` → ``preferred`` on accelerators; on CPU bf16 or fp32 (see ``cpu_bf16``).

    Args:
        cpu_bf16: let ``auto`` pick bf16 on a CPU with AMX (see :func:`flagembed.engine.hardware.cpu_auto_bf16`;
            AVX512-BF16 alone stays fp32), fp32 on other CPUs. Off for jobs that must reproduce fp32 numbers
            (evaluation, FlagEmbedding-compatible classes, merging).

    An explicit dtype always wins, with one exception: fp16 on CPU has no fast kernels there (measured
    0.1 GFLOP/s against 166 fp32 and 660 bf16 on an AVX512-BF16 CPU), so it warns once and uses fp32.
    """
    global _warned_cpu_half
    if dtype is None or dtype == "auto":
        if device.type != "cpu":
            return _DTYPES[preferred]
        from flagembed.engine.hardware import cpu_auto_bf16

        return torch.bfloat16 if cpu_bf16 and cpu_auto_bf16() else torch.float32
    if isinstance(dtype, torch.dtype):
        chosen = dtype
    elif dtype in _DTYPES:
        chosen = _DTYPES[dtype]
    else:
        raise ValueError(f"unknown dtype {dtype!r}; valid: auto, fp32, fp16, bf16")
    if device.type == "cpu" and chosen == torch.float16:
        if not _warned_cpu_half:
            warnings.warn("fp16 was asked for on CPU, which has no fast fp16 kernels; using fp32 (bf16 is fast on "
                          "CPUs with AMX or AVX512-BF16)", stacklevel=3)  # fmt: skip
            _warned_cpu_half = True
        chosen = torch.float32
    elif device.type == "cpu" and chosen == torch.bfloat16:
        from flagembed.engine.hardware import cpu_fast_bf16

        if not cpu_fast_bf16():
            logger.warning("bf16 on a CPU without AMX or AVX512-BF16 is emulated and slower than fp32")
    return chosen


def reference_dtype(dtype: str | torch.dtype | None, device: DeviceLike | Sequence[DeviceLike]) -> str | torch.dtype:
    """``auto`` → ``fp32`` when the (first) device is a CPU, else ``dtype`` unchanged.

    Evaluation jobs and FlagEmbedding-compatible classes use this so that their default numbers are the
    fp32 ones published and computed by the reference; an explicit dtype (``--dtype bf16``) still wins.
    """
    if dtype is not None and dtype != "auto":
        return dtype
    first = resolve_devices(device)[0]
    return "fp32" if first.type == "cpu" else "auto"
