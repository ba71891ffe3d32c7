"""What this machine's CPU can do fast: read once (``/proc/cpuinfo`` flags, torch's CPU capability), cached.

``dtype="auto"`` on CPU becomes bf16 only on CPUs with Intel AMX (``amx_bf16``, Sapphire Rapids and later).
AVX512-BF16 (``avx512_bf16``: Cooper Lake, AMD Zen 4/5) also multiplies bf16 in hardware, so an explicit
``dtype="bf16"`` is fast there (2.4x fp32 for all-MiniLM-L6-v2 on a Zen 5 machine), but ``auto`` stays fp32: on
that machine torch bf16 kept only 99.64 % of fp32's SciFact nDCG@10 (the bar for a default is 99.9 %), and
without AMX the speed-up is too small to hide it. Elsewhere bf16 is emulated and slower than fp32. Tests replace
:func:`cpu_features` with a fake.
"""

from __future__ import annotations

import functools
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path

import torch

BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # x86 flags of a hardware bf16 matrix path


@dataclass(frozen=True)
class CpuFeatures:
    """The CPU's model name, its feature flags and torch's own capability report."""

    model_name: str = "unknown CPU"
    flags: frozenset[str] = field(default_factory=frozenset)
    torch_capability: str = ""
    physical_cores: int = 1

    @property
    def amx(self) -> bool:
        """Intel AMX tiles with bf16 (``amx_bf16``)."""
        return "amx_bf16" in self.flags

    @property
    def fast_bf16(self) -> bool:
        """Whether bf16 matmuls run in hardware (AMX or AVX512-BF16), i.e. faster than fp32."""
        return any(f in self.flags for f in BF16_FLAGS)

    @property
    def summary(self) -> str:
        """One line for logs and benchmark tables."""
        units = [f for f in ("amx_bf16", "amx_int8", "avx512_bf16", "avx512_vnni", "avx_vnni") if f in self.flags]
        return f"{self.model_name} ({self.physical_cores} cores; {' '.join(units) or 'no bf16/int8 matrix units'})"


def parse_cpuinfo(text: str) -> tuple[str, frozenset[str], int]:
    """Model name, flags of the first processor, and physical cores (distinct core ids per socket) from cpuinfo text."""
    name, flags, cores, physical, core = "unknown CPU", frozenset(), set(), "0", None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "model name" and name == "unknown CPU":
            name = value
        elif key in ("flags", "Features") and not flags:
            flags = frozenset(value.split())
        elif key == "physical id":
            physical = value
        elif key == "core id":
            core = value
        elif not key and core is not None:  # blank line: end of one processor's block
            cores.add((physical, core))
            core = None
    if core is not None:
        cores.add((physical, core))
    return name, flags, len(cores)


def _read_features() -> CpuFeatures:
    text = ""
    cpuinfo = Path("/proc/cpuinfo")
    if platform.system() == "Linux" and cpuinfo.is_file():
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    name, flags, cores = parse_cpuinfo(text)
    if name == "unknown CPU":
        name = platform.processor() or name
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    # affinity/cgroup limits can be below the core count; torch's default (one thread per core) respects neither
    physical = min(cores, available) if cores else max(1, torch.get_num_threads())
    return CpuFeatures(name, flags, torch.backends.cpu.get_cpu_capability(), max(1, physical))


@functools.lru_cache(maxsize=1)
def cpu_features() -> CpuFeatures:
    """This machine's :class:`CpuFeatures`, read once per process."""
    return _read_features()


def _bf16_override() -> bool | None:
    """``$FLAGEMBED_CPU_BF16``: ``0``/``1`` forces the answer of the two functions below; unset means detect."""
    env = os.environ.get("FLAGEMBED_CPU_BF16", "").strip()
    if env in ("0", "1"):
        return env == "1"
    if env:
        raise ValueError(f"FLAGEMBED_CPU_BF16 must be 0 or 1, got {env!r}")
    return None


def cpu_fast_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AMX or AVX512-BF16; ``$FLAGEMBED_CPU_BF16=0``/``1`` overrides)."""
    forced = _bf16_override()
    return cpu_features().fast_bf16 if forced is None else forced


def cpu_auto_bf16() -> bool:
    """Whether ``dtype="auto"`` picks bf16 on this CPU: AMX only (``$FLAGEMBED_CPU_BF16=0``/``1`` overrides)."""
    forced = _bf16_override()
    return cpu_features().amx if forced is None else forced


def default_threads() -> int:
    """Intra-op threads for CPU inference: ``$FLAGEMBED_NUM_THREADS`` or one per physical core.

    Tokenization runs before (not beside) the model, so the model may use every core; hyper-threads
    share one core's matrix units, so a second thread per core only adds contention.
    """
    env = os.environ.get("FLAGEMBED_NUM_THREADS")
    if env:
        try:
            value = int(env)
        except ValueError:
            raise ValueError(f"FLAGEMBED_NUM_THREADS must be an integer >= 1, got {env!r}") from None
        if value < 1:
            raise ValueError(f"FLAGEMBED_NUM_THREADS must be >= 1, got {env!r}")
        return value
    return cpu_features().physical_cores


def set_torch_threads(num_threads: int | None = None) -> int:
    """Set torch's intra-op threads (process-wide); returns the count in use.

    ``num_threads`` (or ``$FLAGEMBED_NUM_THREADS``) is applied as given; otherwise a count above one per
    physical core (hyper-threads) is lowered to it, and a lower count someone chose is left alone.

    Raises:
        ValueError: ``num_threads`` < 1.
    """
    if num_threads is not None and int(num_threads) < 1:
        raise ValueError(f"num_threads must be >= 1, got {num_threads}")
    explicit = num_threads is not None or bool(os.environ.get("FLAGEMBED_NUM_THREADS"))
    threads = int(num_threads) if num_threads is not None else default_threads()
    if torch.get_num_threads() != threads and (explicit or torch.get_num_threads() > threads):
        torch.set_num_threads(threads)
    return torch.get_num_threads()
