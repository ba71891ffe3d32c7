"""bf16 on CPU: real all-MiniLM-L6-v2 on real SciFact abstracts stays within cosine 0.999 of fp32."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from flagembed import Embedder


@pytest.mark.slow
def test_bf16_embeddings_within_cosine_0999_of_fp32(minilm_path: Path, scifact_texts: list[str]) -> None:
    texts = scifact_texts[:48]
    fp32 = Embedder(minilm_path, device="cpu", dtype="fp32", batch_size=16).encode(texts)
    bf16 = Embedder(minilm_path, device="cpu", dtype="bf16", batch_size=16)
    assert next(bf16.encoder.parameters()).dtype == torch.bfloat16
    got = bf16.encode(texts)
    assert got.dtype == np.float32 and got.shape == fp32.shape  # pooling and normalisation in fp32
    cos = (got * fp32).sum(axis=1)  # both are unit vectors
    assert float(cos.min()) >= 0.999
    assert float(np.abs(got - fp32).max()) > 0  # really computed in bf16, not silently in fp32
