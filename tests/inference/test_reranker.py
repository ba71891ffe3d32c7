"""Cross-encoder Reranker: scores equal a straightforward per-pair computation and sentence-transformers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tiny_models
import torch

from flagembed.inference.reranker import Reranker, as_pairs, rank

PAIRS = [
    ("what is the cell", "the cell is a small protein in the human brain"),
    ("hiv drug", "clinical therapy for hiv patients with drug treatment and risk"),
    ("a", "b"),
    ("blood virus study results", "the virus was found in blood of mouse and human patients in a long study"),
    ("gene", "gene"),
]


@pytest.fixture(scope="module")
def bert_ce(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_models.build_bert(tmp_path_factory.mktemp("rr") / "bert-ce", seed=3, classifier=True)


@pytest.fixture(scope="module")
def xlmr_ce(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_models.build_xlmr(tmp_path_factory.mktemp("rr") / "xlmr-ce", seed=4, classifier=True)


def _manual_scores(path: Path, pairs: list[tuple[str, str]], max_length: int, query_max_length: int) -> list[float]:
    """One pair at a time: special tokens by hand from the tokenizer's own pair encoding, no padding."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    out = []
    for q, p in pairs:
        q_ids = tok(q, add_special_tokens=False)["input_ids"][:query_max_length]
        p_ids = tok(p, add_special_tokens=False)["input_ids"]
        if tok.cls_token == "[CLS]":  # BERT: [CLS] q [SEP] p [SEP], types 0..0 1..1
            room = max_length - 3 - len(q_ids)
            ids = [tok.cls_token_id, *q_ids, tok.sep_token_id, *p_ids[:room], tok.sep_token_id]
            types = [0] * (len(q_ids) + 2) + [1] * (len(p_ids[:room]) + 1)
            extra = {"token_type_ids": torch.tensor([types])}
        else:  # XLM-R: <s> q </s></s> p </s>
            room = max_length - 4 - len(q_ids)
            ids = [tok.cls_token_id, *q_ids, tok.sep_token_id, tok.sep_token_id, *p_ids[:room], tok.sep_token_id]
            extra = {}
        with torch.no_grad():
            out.append(float(model(input_ids=torch.tensor([ids]), **extra).logits[0, 0]))
    return out


@pytest.mark.parametrize("which", ["bert_ce", "xlmr_ce"])
def test_scores_match_manual_computation(which: str, request: pytest.FixtureRequest) -> None:
    path = request.getfixturevalue(which)
    rr = Reranker(path, device="cpu", batch_size=2)
    got = rr.compute_score(PAIRS)
    want = _manual_scores(path, PAIRS, rr.max_length, rr.max_length * 3 // 4)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("which", ["bert_ce", "xlmr_ce"])
def test_truncation_query_and_passage(which: str, request: pytest.FixtureRequest) -> None:
    path = request.getfixturevalue(which)
    long_q = " ".join(["cell protein gene"] * 10)
    long_p = " ".join(["the virus was found in blood"] * 20)
    pairs = [(long_q, long_p), ("gene", long_p), (long_q, "b")]
    rr = Reranker(path, device="cpu", max_length=24)
    got = rr.compute_score(pairs)
    assert rr.last_truncated == 3
    np.testing.assert_allclose(got, _manual_scores(path, pairs, 24, 18), rtol=1e-5, atol=1e-6)


def test_matches_sentence_transformers_cross_encoder(bert_ce: Path) -> None:
    st = pytest.importorskip("sentence_transformers")
    ce = st.CrossEncoder(str(bert_ce), device="cpu", max_length=128)
    want = ce.predict(PAIRS, activation_fn=torch.nn.Identity(), convert_to_numpy=True)
    got = Reranker(bert_ce, device="cpu", dtype="fp32").compute_score(PAIRS)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_length_sorted_batches_restore_order(bert_ce: Path) -> None:
    rr = Reranker(bert_ce, device="cpu", batch_size=2)
    seen: list[int] = []
    handle = rr.model.register_forward_pre_hook(
        lambda _m, _a, kw: seen.append(int(kw["attention_mask"].sum(1).max())), with_kwargs=True
    )
    try:
        base = rr.compute_score(PAIRS)
    finally:
        handle.remove()
    assert seen == sorted(seen, reverse=True) and len(seen) == 3  # longest first, 5 pairs in batches of 2
    perm = [3, 0, 4, 2, 1]
    shuffled = rr.compute_score([PAIRS[i] for i in perm], batch_size=5)
    np.testing.assert_allclose(shuffled, [base[i] for i in perm], rtol=1e-5, atol=1e-6)


def test_single_pair_normalize_and_rerank(bert_ce: Path) -> None:
    rr = Reranker(bert_ce, device="cpu")
    raw = rr.compute_score(PAIRS)
    one = rr.compute_score(PAIRS[0])
    assert isinstance(one, list) and len(one) == 1
    np.testing.assert_allclose(one[0], raw[0], rtol=1e-5)
    np.testing.assert_allclose(rr.compute_score(PAIRS, normalize=True), 1 / (1 + np.exp(-np.array(raw))), rtol=1e-6)
    docs = [p for _, p in PAIRS]
    res = rr.rerank("what is the cell", docs, top_k=3)
    scores = rr.compute_score([("what is the cell", d) for d in docs])
    assert [r.index for r in res] == list(np.argsort(-np.array(scores), kind="stable")[:3])
    assert res[0].document == docs[res[0].index] and res[0].score == pytest.approx(max(scores))
    assert rr.compute_score([]) == []


def test_instructions_are_applied(bert_ce: Path) -> None:
    rr = Reranker(bert_ce, device="cpu", query_instruction="query: ", passage_instruction="passage: ")
    plain = Reranker(bert_ce, device="cpu")
    got = rr.compute_score(PAIRS[:2])
    want = plain.compute_score([("query: " + q, "passage: " + p) for q, p in PAIRS[:2]])
    np.testing.assert_allclose(got, want, rtol=1e-6)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ([("q", "p"), ("q", 3)], r"sentence_pairs\[1\] passage must be a string"),
        ([("q", "p"), (None, "p")], r"sentence_pairs\[1\] query must be a string"),
        ([("q", "p", "x")], r"sentence_pairs\[0\] must be a \(query, passage\) pair, got of size 3"),
        ([("q", "p"), "qp"], r"sentence_pairs\[1\] must be a \(query, passage\) pair"),
        ("just a string", "must be a"),
        (None, "must be a"),
    ],
)
def test_pair_validation(bad: object, message: str) -> None:
    with pytest.raises(TypeError, match=message):
        as_pairs(bad)


def test_rank_ties_keep_order_and_top_k() -> None:
    res = rank([0.5, 0.9, 0.5], ["a", "b", "c"], top_k=None)
    assert [r.index for r in res] == [1, 0, 2]
    assert rank([1.0], ["a"], top_k=0) == []
    with pytest.raises(ValueError, match="top_k"):
        rank([1.0], ["a"], top_k=-1)


def test_checkpoints_without_a_trained_head_are_refused(tmp_path: Path, tiny_bert: Path, tiny_xlmr: Path) -> None:
    import tiny_m3
    import tiny_rerankers

    with pytest.raises(ValueError, match="no trained classification head.*classifier.*embedder or a BGE-M3"):
        Reranker(tiny_bert, device="cpu")  # an embedder: BertModel weights only
    m3 = tiny_m3.build_m3(tmp_path / "m3")
    with pytest.raises(ValueError, match="no trained classification head"):
        Reranker(m3, device="cpu")
    lm = tiny_rerankers.build_decoder_lm(tmp_path / "lm", "qwen2", layers=2)
    with pytest.raises(ValueError, match="score.weight.*--kind llm"):
        Reranker(lm, device="cpu")


def test_rerank_validates_query_and_top_k(bert_ce: Path) -> None:
    rr = Reranker(bert_ce, device="cpu")
    with pytest.raises(ValueError, match="query is empty"):
        rr.rerank(" ", ["a", "b"])
    with pytest.raises(ValueError, match="top_k must be a positive integer"):
        rr.rerank("cell", ["a", "b"], top_k=0)
    assert [r.index for r in rr.rerank("cell", ["a", "b"], top_k=None)] != []
