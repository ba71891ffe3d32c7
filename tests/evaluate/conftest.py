"""Fixtures for evaluation tests: a tiny embedder and a small BEIR-layout folder."""

from __future__ import annotations

from pathlib import Path

import pytest
from tiny_eval import write_beir


@pytest.fixture(scope="session")
def tiny_embedder(tiny_bert: Path):
    from flagembed.inference import Embedder

    return Embedder(str(tiny_bert), device="cpu", pooling="cls", show_progress=False)


@pytest.fixture()
def beir_dir(tmp_path: Path) -> Path:
    return write_beir(tmp_path / "toy")
