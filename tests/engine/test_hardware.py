"""CPU feature detection and the dtype it selects: auto/explicit, per class, with a mocked CPU."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import tiny_models
import torch

import flagembed.engine.devices as devices
from flagembed.engine import hardware
from flagembed.engine.devices import reference_dtype, resolve_dtype

CPU = torch.device("cpu")
SAPPHIRE_RAPIDS = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
physical id\t: 0
core id\t\t: 0
flags\t\t: fpu sse avx2 avx512f avx512_bf16 avx512_vnni amx_bf16 amx_tile amx_int8

processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8480+
physical id\t: 0
core id\t\t: 0
flags\t\t: fpu sse avx2 avx512f avx512_bf16 avx512_vnni amx_bf16 amx_tile amx_int8

processor\t: 2
physical id\t: 0
core id\t\t: 1
flags\t\t: fpu sse avx2 avx512f avx512_bf16 avx512_vnni amx_bf16 amx_tile amx_int8
"""
SKYLAKE_FLAGS = frozenset({"fpu", "avx2", "avx512f", "avx512_vnni"})


def fake_cpu(monkeypatch: pytest.MonkeyPatch, flags: frozenset[str] | set[str]) -> None:
    """Pretend this machine has a CPU with ``flags`` (the suite's FLAGEMBED_CPU_BF16=0 is lifted)."""
    monkeypatch.delenv("FLAGEMBED_CPU_BF16", raising=False)
    feats = hardware.CpuFeatures("fake CPU", frozenset(flags), "AVX512", 2)
    monkeypatch.setattr(hardware, "cpu_features", lambda: feats)


def test_parse_cpuinfo_reads_name_flags_and_physical_cores() -> None:
    name, flags, cores = hardware.parse_cpuinfo(SAPPHIRE_RAPIDS)
    assert name == "Intel(R) Xeon(R) Platinum 8480+"
    assert {"amx_bf16", "avx512_bf16", "amx_int8"} <= flags
    assert cores == 2  # processors 0 and 1 are hyper-threads of core 0
    assert hardware.parse_cpuinfo("") == ("unknown CPU", frozenset(), 0)


@pytest.mark.parametrize(
    ("flags", "fast"),
    [({"amx_bf16", "amx_tile"}, True), ({"avx512_bf16"}, True), (SKYLAKE_FLAGS, False), (set(), False)],
)
def test_fast_bf16_needs_amx_or_avx512_bf16(flags: set[str], fast: bool) -> None:
    assert hardware.CpuFeatures(flags=frozenset(flags)).fast_bf16 is fast


def test_the_real_machine_is_read_once() -> None:
    feats = hardware.cpu_features()
    assert feats is hardware.cpu_features() and feats.physical_cores >= 1 and feats.model_name


def test_auto_is_bf16_only_on_cpus_with_amx(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_cpu(monkeypatch, {"amx_bf16", "avx512_bf16"})
    assert resolve_dtype("auto", CPU, cpu_bf16=True) == torch.bfloat16
    assert resolve_dtype(None, CPU, cpu_bf16=True) == torch.bfloat16
    assert resolve_dtype("auto", CPU) == torch.float32  # jobs that must reproduce fp32 numbers
    fake_cpu(monkeypatch, {"avx512_bf16", "avx512_vnni"})  # AMD Zen 4/5: fast bf16 when asked, fp32 by default
    assert hardware.cpu_fast_bf16() and not hardware.cpu_auto_bf16()
    assert resolve_dtype("auto", CPU, cpu_bf16=True) == torch.float32
    assert resolve_dtype("bf16", CPU, cpu_bf16=True) == torch.bfloat16
    fake_cpu(monkeypatch, SKYLAKE_FLAGS)
    assert resolve_dtype("auto", CPU, cpu_bf16=True) == torch.float32
    monkeypatch.setenv("FLAGEMBED_CPU_BF16", "1")
    assert resolve_dtype("auto", CPU, cpu_bf16=True) == torch.bfloat16
    monkeypatch.setenv("FLAGEMBED_CPU_BF16", "yes")
    with pytest.raises(ValueError, match="FLAGEMBED_CPU_BF16 must be 0 or 1"):
        resolve_dtype("auto", CPU, cpu_bf16=True)


def test_explicit_dtype_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_cpu(monkeypatch, {"amx_bf16"})
    assert resolve_dtype("fp32", CPU, cpu_bf16=True) == torch.float32
    assert resolve_dtype(torch.float32, CPU, cpu_bf16=True) == torch.float32
    fake_cpu(monkeypatch, SKYLAKE_FLAGS)
    assert resolve_dtype("bf16", CPU) == torch.bfloat16  # emulated, slow, but asked for
    devices._warned_cpu_half = False
    with pytest.warns(UserWarning, match="fp16 was asked for on CPU"):
        assert resolve_dtype("fp16", CPU, cpu_bf16=True) == torch.float32
    with pytest.raises(ValueError, match="unknown dtype 'int4'"):
        resolve_dtype("int4", CPU)


def test_reference_dtype_keeps_fp32_on_cpu_only() -> None:
    assert reference_dtype("auto", "cpu") == "fp32"
    assert reference_dtype(None, ["cpu"]) == "fp32"
    assert reference_dtype("bf16", "cpu") == "bf16"


@pytest.fixture(scope="module")
def tiny_ce(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_models.build_bert(tmp_path_factory.mktemp("hw") / "ce", seed=3, classifier=True)


@pytest.fixture(scope="module")
def tiny_m3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tiny_m3 import build_m3

    return build_m3(tmp_path_factory.mktemp("hw") / "m3")


def _param_dtype(module: torch.nn.Module) -> torch.dtype:
    return next(module.parameters()).dtype


def test_default_dtype_per_entry_point_on_an_amx_cpu(
    monkeypatch: pytest.MonkeyPatch, tiny_bert: Path, tiny_ce: Path, tiny_m3: Path
) -> None:
    """Embedding, M3, reranking (and so indexing/serving) go bf16; evaluation and FE-compatible names stay fp32."""
    from flagembed.evaluate.jobs import load_embedder, load_reranker
    from flagembed.inference import BGEM3FlagModel, Embedder, FlagModel, FlagReranker, M3Embedder, Reranker

    fake_cpu(monkeypatch, {"amx_bf16", "amx_tile", "avx512_bf16"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tiny checkpoints' own notes
        emb = Embedder(tiny_bert, device="cpu")
        assert emb.dtype == _param_dtype(emb.encoder) == torch.bfloat16
        assert emb.encode(["a b c", "d"]).dtype.name == "float32"  # pooling/normalisation in fp32
        assert M3Embedder(tiny_m3, device="cpu").dtype == torch.bfloat16
        assert Reranker(tiny_ce, device="cpu").dtype == torch.bfloat16
        assert Embedder(tiny_bert, device="cpu", dtype="fp32").dtype == torch.float32
        assert _param_dtype(FlagModel(str(tiny_bert), devices="cpu").encoder) == torch.float32
        assert FlagModel(str(tiny_bert), devices="cpu", dtype="bf16").dtype == torch.bfloat16
        assert BGEM3FlagModel(str(tiny_m3), devices="cpu").dtype == torch.float32
        assert FlagReranker(str(tiny_ce), devices="cpu").dtype == torch.float32
        assert load_embedder(str(tiny_bert), device="cpu").dtype == torch.float32
        assert load_embedder(str(tiny_bert), device="cpu", dtype="bf16").dtype == torch.bfloat16
        assert load_reranker(str(tiny_ce), device="cpu").dtype == torch.float32
    fake_cpu(monkeypatch, SKYLAKE_FLAGS)  # no AMX, no AVX512-BF16: the default stays fp32
    assert Embedder(tiny_bert, device="cpu").dtype == torch.float32
    assert Reranker(tiny_ce, device="cpu").dtype == torch.float32


def test_threads_default_to_physical_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLAGEMBED_NUM_THREADS", raising=False)
    assert hardware.default_threads() == hardware.cpu_features().physical_cores
    before = torch.get_num_threads()
    try:
        assert hardware.set_torch_threads(1) == 1 == torch.get_num_threads()
        assert hardware.set_torch_threads() == 1  # a lower count someone chose is left alone
        with pytest.raises(ValueError, match="num_threads must be >= 1"):
            hardware.set_torch_threads(0)
        monkeypatch.setenv("FLAGEMBED_NUM_THREADS", "x")
        with pytest.raises(ValueError, match="FLAGEMBED_NUM_THREADS must be an integer"):
            hardware.default_threads()
    finally:
        torch.set_num_threads(before)
