"""M3Embedder against a straightforward per-text / per-pair computation of REFERENCE.md §1.3 and §2.2."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from flagembed import BGEM3FlagModel, M3Embedder

TEXTS = [
    "what is a dense vector",
    "the protein gene cancer study results",
    "sparse token token token search",
    "a",
    "data analysis method for clinical patients and the treatment of disease risk in human brain blood",
]


@pytest.fixture(scope="module")
def m3_path(tmp_path_factory: pytest.TempPathFactory):
    from tiny_m3 import build_m3

    return build_m3(tmp_path_factory.mktemp("models") / "tiny-m3")


@pytest.fixture(scope="module")
def m3(m3_path) -> M3Embedder:
    return M3Embedder(m3_path, device="cpu", batch_size=2)


@pytest.fixture(scope="module")
def naive(m3_path):
    """Per-text reference outputs computed with plain transformers + torch, one text at a time, no padding."""
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(m3_path))
    model = AutoModel.from_pretrained(str(m3_path)).eval()
    sparse_state = torch.load(m3_path / "sparse_linear.pt")
    colbert_state = torch.load(m3_path / "colbert_linear.pt")
    unused = {tok.cls_token_id, tok.eos_token_id, tok.pad_token_id, tok.unk_token_id}

    def run(text: str, max_length: int = 512):
        enc = tok(text, truncation=True, max_length=max_length, return_tensors="pt")
        with torch.no_grad():
            h = model(**enc).last_hidden_state[0]
        dense = F.normalize(h[0], dim=-1).numpy()
        w = torch.relu(h @ sparse_state["weight"].T + sparse_state["bias"]).squeeze(-1)
        lex: dict[str, float] = {}
        for weight, idx in zip(w.tolist(), enc["input_ids"][0].tolist()):
            if idx in unused or weight <= 0:
                continue
            if weight > lex.get(str(idx), 0):
                lex[str(idx)] = weight
        col = F.normalize(h[1:] @ colbert_state["weight"].T + colbert_state["bias"], dim=-1).numpy()
        return dense, lex, col

    return run


def _lex_score(a: dict[str, float], b: dict[str, float]) -> float:
    return sum(w * b[t] for t, w in a.items() if t in b)


def _colbert(q: np.ndarray, p: np.ndarray) -> float:
    return float(np.sum(np.max(q @ p.T, axis=1)) / len(q))


def test_encode_matches_per_text_computation(m3, naive) -> None:
    out = m3.encode(TEXTS, return_dense=True, return_sparse=True, return_colbert_vecs=True)
    assert set(out) == {"dense_vecs", "lexical_weights", "colbert_vecs"}
    for i, text in enumerate(TEXTS):
        dense, lex, col = naive(text)
        np.testing.assert_allclose(out["dense_vecs"][i], dense, atol=1e-5)
        got = out["lexical_weights"][i]
        assert set(got) == set(lex), text
        np.testing.assert_allclose([got[k] for k in lex], [lex[k] for k in lex], atol=1e-5)
        assert out["colbert_vecs"][i].shape == col.shape  # includes the final </s>, excludes <s>
        np.testing.assert_allclose(out["colbert_vecs"][i], col, atol=1e-5)
    assert any(len(lw) < len(set(m3.tokenizer(t)["input_ids"])) - 2 for t, lw in zip(TEXTS, out["lexical_weights"]))


def test_batch_forms_equal_dict_forms(m3) -> None:
    ref = m3.encode(TEXTS, return_sparse=True, return_colbert_vecs=True)
    batch = m3.encode(TEXTS, return_sparse=True, return_colbert_vecs=True, output="batch")
    assert batch.sparse.shape == (len(TEXTS), m3.vocab_size)
    for i, lw in enumerate(ref["lexical_weights"]):
        row = batch.sparse.getrow(i)
        assert dict(zip(map(str, row.indices), row.data)) == lw
    padded, lengths = batch.colbert_padded()
    assert padded.shape == (len(TEXTS), max(lengths), m3.colbert_dim)
    for i, vecs in enumerate(ref["colbert_vecs"]):
        assert lengths[i] == len(vecs)
        np.testing.assert_array_equal(padded[i, : lengths[i]], vecs)
        assert not padded[i, lengths[i] :].any()
    np.testing.assert_array_equal(batch.dense, ref["dense_vecs"])


def test_defaults_single_string_and_empty(m3) -> None:
    out = m3.encode("what is a dense vector")
    assert out["dense_vecs"].shape == (m3.dim,) and out["lexical_weights"] is None and out["colbert_vecs"] is None
    one = m3.encode("what is a dense vector", return_sparse=True, return_colbert_vecs=True)
    assert isinstance(one["lexical_weights"], dict) and one["colbert_vecs"].ndim == 2
    empty = m3.encode([], return_sparse=True, return_colbert_vecs=True)
    assert empty["dense_vecs"].shape == (0, m3.dim) and empty["lexical_weights"] == [] and empty["colbert_vecs"] == []
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        m3.encode(["ok", 3])


def test_compute_score_matches_per_pair_formulas(m3, naive) -> None:
    pairs = [(TEXTS[0], TEXTS[1]), (TEXTS[0], TEXTS[2]), (TEXTS[3], TEXTS[4]), (TEXTS[2], TEXTS[2])]
    weights = [0.4, 0.2, 0.4]
    got = m3.compute_score(pairs, weights_for_different_modes=weights, max_passage_length=8)
    assert set(got) == {"colbert", "sparse", "dense", "sparse+dense", "colbert+sparse+dense"}
    for i, (q, p) in enumerate(pairs):
        qd, ql, qc = naive(q)
        pd, pl, pc = naive(p, max_length=8)
        d, s, c = float(qd @ pd), _lex_score(ql, pl), _colbert(qc, pc)
        assert got["dense"][i] == pytest.approx(d, abs=1e-5)
        assert got["sparse"][i] == pytest.approx(s, abs=1e-5)
        assert got["colbert"][i] == pytest.approx(c, abs=1e-5)
        assert got["sparse+dense"][i] == pytest.approx((0.2 * s + 0.4 * d) / 0.6, abs=1e-5)
        assert got["colbert+sparse+dense"][i] == pytest.approx((0.4 * c + 0.2 * s + 0.4 * d) / 1.0, abs=1e-5)
    single = m3.compute_score(pairs[0])
    assert isinstance(single["dense"], float)
    assert single["colbert+sparse+dense"] == pytest.approx(
        (single["colbert"] + single["sparse"] + single["dense"]) / 3, abs=1e-6
    )
    with pytest.raises(ValueError, match="3 numbers"):
        m3.compute_score(pairs, weights_for_different_modes=[1, 1])
    with pytest.raises(TypeError, match=r"sentence_pairs\[1\]"):
        m3.compute_score([("a", "b"), ("only one",)])


def test_helpers_match_formulas(m3, naive) -> None:
    out = m3.encode(TEXTS[:3], return_sparse=True, return_colbert_vecs=True)
    lw = out["lexical_weights"]
    assert m3.compute_lexical_matching_score(lw[0], lw[2]) == pytest.approx(_lex_score(lw[0], lw[2]), abs=1e-6)
    matrix = m3.compute_lexical_matching_score(lw, lw)
    assert matrix.shape == (3, 3)
    assert matrix[1, 2] == pytest.approx(_lex_score(lw[1], lw[2]), abs=1e-5)
    cv = out["colbert_vecs"]
    assert float(m3.colbert_score(cv[0], cv[1])) == pytest.approx(_colbert(cv[0], cv[1]), abs=1e-5)
    tokens = m3.convert_id_to_token(lw[1])
    # one token string per kept id (which ids survive relu depends on the random heads)
    assert set(tokens) == {m3.tokenizer.decode([int(k)]) for k in lw[1]}
    assert isinstance(m3.convert_id_to_token(lw), list)


def test_bgem3flagmodel_alias(m3_path, m3) -> None:
    model = BGEM3FlagModel(str(m3_path), use_fp16=False, devices="cpu", return_sparse=True)
    out = model.encode_queries(TEXTS[:2])
    ref = m3.encode(TEXTS[:2], return_sparse=True)
    np.testing.assert_allclose(out["dense_vecs"], ref["dense_vecs"], atol=1e-6)
    assert out["lexical_weights"] == ref["lexical_weights"] and out["colbert_vecs"] is None
    corpus = model.encode_corpus(TEXTS[:2], return_colbert_vecs=True, return_sparse=False)
    assert corpus["lexical_weights"] is None and len(corpus["colbert_vecs"]) == 2


def test_missing_head_files(tmp_path) -> None:
    import tiny_models

    from flagembed.models import load_m3_heads

    path = tiny_models.build_xlmr(tmp_path / "plain")
    with pytest.raises(FileNotFoundError, match="sparse_linear.pt"):
        M3Embedder(path, device="cpu")
    heads = load_m3_heads(path, 32, for_training=True)
    assert heads.colbert_dim == 32
