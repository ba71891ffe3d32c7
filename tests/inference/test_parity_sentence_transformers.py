"""Parity with sentence-transformers on the real all-MiniLM-L6-v2 and real SciFact abstracts."""

import numpy as np
import pytest


@pytest.mark.slow
def test_minilm_equals_sentence_transformers(minilm_path, scifact_texts):
    st = pytest.importorskip("sentence_transformers")
    from flagembed import Embedder

    texts = scifact_texts[:600]
    ours = Embedder("all-MiniLM-L6-v2", device="cpu", dtype="fp32", batch_size=64).encode(texts)
    ref = st.SentenceTransformer(str(minilm_path), device="cpu").encode(
        texts, batch_size=64, convert_to_numpy=True, normalize_embeddings=False
    )
    assert ours.shape == ref.shape == (600, 384)
    assert float(np.abs(ours - ref).max()) <= 1e-5


def test_minilm_settings_come_from_its_folder(minilm_path):
    from flagembed import Embedder

    emb = Embedder("all-MiniLM-L6-v2")
    s = emb.settings
    assert (s.pooling, s.normalize, s.max_length, s.query_instruction) == ("mean", True, 256, None)
    assert s.name == "sentence-transformers/all-MiniLM-L6-v2"
