"""Fixtures for the serving tests; the fakes live in tests/serve_fakes.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from serve_fakes import FakeM3, FakeReranker

from flagembed.inference import Embedder
from flagembed.serve import ModelHost


@pytest.fixture(scope="session")
def tiny_embedder(tiny_bert: Path) -> Embedder:
    return Embedder(str(tiny_bert), device="cpu", dtype="fp32", show_progress=False)


@pytest.fixture()
def dense_host(tiny_embedder: Embedder) -> ModelHost:
    return ModelHost(name="tiny-bert", model=tiny_embedder, aliases=("tiny",))


@pytest.fixture()
def m3_host(tiny_embedder: Embedder) -> ModelHost:
    tok = tiny_embedder.tokenizer
    return ModelHost(
        name="fake-m3", model=FakeM3(tok), kind="m3", reranker=FakeReranker(tok), reranker_name="fake-reranker"
    )
