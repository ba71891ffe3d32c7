"""M3 head math against plain loops over tokens and pairs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flagembed.models import M3Heads, load_m3_heads, maxsim
from flagembed.models.heads import colbert_lengths, colbert_vectors, sparse_rows, sparse_vocab, token_weights


def _batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, 12, (3, 7), generator=g)
    mask = torch.ones(3, 7, dtype=torch.long)
    mask[1, 5:] = 0
    mask[2, 3:] = 0
    ids[mask == 0] = 1  # pad
    ids[:, 0] = 0  # cls
    weights = torch.randn(3, 7, generator=g).relu()
    return ids, mask, weights


def test_sparse_rows_match_token_loop() -> None:
    ids, mask, w = _batch()
    rows = sparse_rows(w, ids, mask, unused_ids=[0, 1, 2, 3])
    for b in range(3):
        expected: dict[int, float] = {}
        for weight, idx, m in zip(w[b].tolist(), ids[b].tolist(), mask[b].tolist()):
            if m and idx not in (0, 1, 2, 3) and weight > 0:
                expected[idx] = max(expected.get(idx, 0.0), weight)
        got_ids, got_w = rows[b]
        assert got_ids.tolist() == sorted(expected)
        np.testing.assert_allclose(got_w, [expected[i] for i in sorted(expected)], rtol=1e-6)
    full = sparse_vocab(w, ids, 16, [0, 1, 2, 3])
    for b in range(3):
        dense_row = np.zeros(16, np.float32)
        dense_row[rows[b][0]] = rows[b][1]
        np.testing.assert_allclose(full[b].numpy(), dense_row, rtol=1e-6)


def test_colbert_vectors_and_maxsim() -> None:
    ids, mask, _ = _batch()
    heads = M3Heads(8, colbert_dim=5)
    hidden = torch.randn(3, 7, 8)
    with torch.no_grad():
        vecs = colbert_vectors(hidden, mask, heads.colbert_linear)
    lens = colbert_lengths(mask)
    assert lens.tolist() == [6, 4, 2]
    assert torch.all(vecs[1, 4:] == 0)
    np.testing.assert_allclose(vecs[0].norm(dim=-1).numpy(), 1.0, rtol=1e-5)
    scores = maxsim(vecs, lens, vecs, lens)
    for i in range(3):
        for j in range(3):
            q, d = vecs[i, : lens[i]], vecs[j, : lens[j]]
            expected = (q @ d.T).max(dim=1).values.sum() / len(q)
            assert scores[i, j].item() == pytest.approx(expected.item(), abs=1e-5)
    pair = maxsim(vecs, lens, vecs.flip(0), lens.flip(0), pairwise=True)
    np.testing.assert_allclose(pair.numpy(), [scores[0, 2], scores[1, 1], scores[2, 0]], atol=1e-6)
    with torch.no_grad():
        assert torch.all(token_weights(hidden, heads.sparse_linear) >= 0)


def test_heads_round_trip(tmp_path) -> None:
    heads = M3Heads(8, colbert_dim=5)
    heads.save(tmp_path)
    loaded = load_m3_heads(tmp_path, 8)
    assert loaded.colbert_dim == 5
    torch.testing.assert_close(loaded.colbert_linear.weight, heads.colbert_linear.weight)
    with pytest.raises(ValueError, match="hidden size"):
        load_m3_heads(tmp_path, 16)
