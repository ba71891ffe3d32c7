"""BM25Index: scores equal bm25s' own on the same tokens; add/remove/save/load; tokenisation; hybrid fusion."""

from __future__ import annotations

import json

import numpy as np
import pytest

bm25s = pytest.importorskip("bm25s")

from flagembed.index import DenseIndex, IndexFormatError  # noqa: E402
from flagembed.index.bm25 import BM25Index, BM25Tokenizer  # noqa: E402
from flagembed.index.bm25_fusion import fuse_with_dense, rrf_scores  # noqa: E402

DOCS = [
    "BM25 is a bag-of-words ranking function used by search engines.",
    "Dense retrieval encodes queries and passages into vectors.",
    "Reciprocal rank fusion combines rankings from several retrievers.",
    "The ranking function BM25 weighs term frequency and document length.",
    "Vectors from BGE models are normalised; cosine equals the inner product.",
    "Search engines index documents for fast lexical ranking.",
]
QUERIES = ["bm25 ranking function", "dense vectors cosine", "fusion of rankings", "nothing matches zzz"]


def _peer(tokens: list[list[str]], query_tokens: list[list[str]], **kw) -> list[dict[int, float]]:
    """bm25s' own retrieval on the same tokens: {doc position: score} per query (all docs, score > 0)."""
    retriever = bm25s.BM25(**kw)
    retriever.index(tokens, show_progress=False)
    docs, scores = retriever.retrieve(query_tokens, k=len(tokens), show_progress=False)
    return [{int(d): float(s) for d, s in zip(dr, sr) if s > 0} for dr, sr in zip(docs, scores)]


def _ours(results, ids: list[str]) -> list[dict[int, float]]:
    pos = {d: i for i, d in enumerate(ids)}
    return [{pos[d]: s for d, s in zip(i, s)} for i, s in zip(results.ids, results.scores)]


@pytest.mark.parametrize("kw", [{}, {"k1": 0.9, "b": 0.4}, {"method": "robertson"}, {"method": "atire"}])
def test_scores_equal_bm25s_on_the_same_tokens(kw):
    ids = [f"d{i}" for i in range(len(DOCS))]
    ix = BM25Index(**kw)
    ix.add(ids, DOCS)
    tok = ix.tokenizer
    peer = _peer(tok.tokenize(DOCS), tok.tokenize(QUERIES), **kw)
    ours = _ours(ix.search(QUERIES, top_k=len(DOCS)), ids)
    for q, (o, p) in enumerate(zip(ours, peer)):
        assert set(o) >= set(p), q
        for d, s in p.items():
            assert o[d] == pytest.approx(s, rel=1e-5, abs=1e-6), (q, d)
    assert ours[3] == {}  # shares no token: no hits (bm25s gives all zeros)
    exact = ix.scores(QUERIES[:1], ids)[0]
    assert [exact[d] for d in sorted(peer[0])] == pytest.approx([peer[0][d] for d in sorted(peer[0])], rel=1e-5)


def test_repeated_query_tokens_count_like_bm25s():
    ix = BM25Index()
    ix.add(["a", "b"], DOCS[:2])
    peer = _peer(ix.tokenizer.tokenize(DOCS[:2]), [["bm25", "bm25", "ranking"]])
    assert ix.search([["bm25", "bm25", "ranking"]], 2).scores[0][0] == pytest.approx(peer[0][0], rel=1e-5)


def test_top_k_order_and_ties_are_stable():
    ix = BM25Index()
    ix.add(["x", "y", "z"], ["apple pie", "apple pie", "banana"])
    res = ix.search(["apple", "banana"], top_k=1)
    assert res.ids == [["x"], ["z"]]
    assert ix.search("apple", top_k=5).ids == [["x", "y"]]


def test_remove_and_add_rebuild_statistics():
    ids = [f"d{i}" for i in range(len(DOCS))]
    ix = BM25Index()
    ix.add(ids, DOCS)
    assert ix.remove(["d0", "d3", "unknown"]) == 2
    ix.add(["new"], ["BM25 again, a ranking function"])
    kept = [DOCS[i] for i in (1, 2, 4, 5)] + ["BM25 again, a ranking function"]
    kept_ids = ["d1", "d2", "d4", "d5", "new"]
    fresh = BM25Index()
    fresh.add(kept_ids, kept)
    a, b = ix.search(QUERIES, 5), fresh.search(QUERIES, 5)
    assert a.ids == b.ids and np.allclose(sum(a.scores, []), sum(b.scores, []))
    assert ix.ids == kept_ids and len(ix) == 5
    with pytest.raises(ValueError, match="already in the index"):
        ix.add(["d1"], ["dup"])
    with pytest.raises(TypeError, match="single one"):
        ix.add(["q"], "one string")


def test_save_load_round_trip_and_checksums(tmp_path):
    ids = [f"d{i}" for i in range(len(DOCS))]
    tok = BM25Tokenizer(stopwords="en", cjk_ngrams=(1,))
    ix = BM25Index(tok, k1=1.2, b=0.6)
    ix.add(ids, DOCS)
    ix.remove(["d2"])
    ix.save(tmp_path / "bm")
    manifest = json.loads((tmp_path / "bm" / "manifest.json").read_text())
    assert manifest["type"] == "bm25" and manifest["params"]["tokenizer"]["stopwords"] == "en"
    back = BM25Index.load(tmp_path / "bm")
    assert back.tokenizer == tok and (back.k1, back.b) == (1.2, 0.6)
    assert back.search(QUERIES, 5) == ix.search(QUERIES, 5)
    (tmp_path / "bm" / "tokens.npy").write_bytes(b"broken")
    with pytest.raises(IndexFormatError, match="checksum"):
        BM25Index.load(tmp_path / "bm")
    ix.save(tmp_path / "sp")
    with pytest.raises(IndexFormatError, match="not a 'sparse'"):
        from flagembed.index import SparseIndex

        SparseIndex.load(tmp_path / "sp")


def test_tokenizer_english_and_chinese():
    tok = BM25Tokenizer()
    assert tok("Hello, World! a BM25-based x") == ["hello", "world", "bm25", "based"]
    assert tok("检索增强") == ["检", "索", "增", "强", "检索", "索增", "增强"]
    assert tok("BGE模型 is good") == ["bge", "模", "型", "模型", "is", "good"]
    assert BM25Tokenizer(stopwords="en")("is the bm25") == ["bm25"]
    assert BM25Tokenizer(lowercase=False)("BGE bge") == ["BGE", "bge"]
    assert BM25Tokenizer(stopwords=["foo"])("foo bar") == ["bar"]
    pytest.importorskip("nltk")
    assert BM25Tokenizer(stemmer="snowball")("ranking functions") == ["rank", "function"]
    with pytest.raises(ValueError, match="unknown stemmer"):
        BM25Tokenizer(stemmer="lancaster")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="stopwords"):
        BM25Tokenizer(stopwords="fr")


def test_bad_parameters():
    with pytest.raises(ValueError, match="method"):
        BM25Index(method="bm25x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="k1"):
        BM25Index(b=2.0)
    with pytest.raises(ValueError, match="top_k"):
        BM25Index().search("x", top_k=0)
    assert BM25Index().search(["a", "b"], 3).ids == [[], []]


def test_chinese_bigrams_find_the_passage(shared_data):
    root = shared_data / "cmrc2018-retrieval"
    if not root.is_dir():
        pytest.skip("cmrc2018-retrieval is absent")
    from flagembed.evaluate import evaluate_run, load_retrieval

    data = load_retrieval(root, "test")
    ix = BM25Index()
    ix.add(data.doc_ids(), data.doc_texts())
    qids = list(data.queries)[:200]
    res = ix.search([data.queries[q] for q in qids], 10)
    run = {q: dict(zip(i, s)) for q, i, s in zip(qids, res.ids, res.scores)}
    ndcg = evaluate_run({q: data.qrels[q] for q in qids}, run, (10,), ("ndcg",)).scores["ndcg_at_10"]
    words_only = BM25Index(BM25Tokenizer(cjk_ngrams=()))  # no CJK tokens at all: nothing to match on
    words_only.add(data.doc_ids(), data.doc_texts())
    res = words_only.search([data.queries[q] for q in qids], 10)
    run = {q: dict(zip(i, s)) for q, i, s in zip(qids, res.ids, res.scores)}
    base = evaluate_run({q: data.qrels[q] for q in qids}, run, (10,), ("ndcg",)).scores["ndcg_at_10"]
    assert ndcg > 0.7 and ndcg > base + 0.3  # character n-grams work without a word segmenter


def _toy_dense():
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(len(DOCS), 8)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    ids = [f"d{i}" for i in range(len(DOCS))]
    dense = DenseIndex(8, kind="flat")
    dense.add(ids, vecs)
    bm = BM25Index()
    bm.add(ids, DOCS)
    q = rng.normal(size=(len(QUERIES), 8)).astype(np.float32)
    return dense, bm, q / np.linalg.norm(q, axis=1, keepdims=True), vecs, ids


def test_weighted_fusion_equals_brute_force():
    dense, bm, q, vecs, ids = _toy_dense()
    res = fuse_with_dense(dense, q, bm, QUERIES, top_k=3, weights={"dense": 0.3, "bm25": 0.7})
    lex = bm.scores(QUERIES, ids)
    for qi in range(len(QUERIES)):
        best = lex[qi].max()
        want = (0.3 * (vecs @ q[qi]) + 0.7 * (lex[qi] / best if best > 0 else 0 * lex[qi])) / 1.0
        order = np.argsort(-want, kind="stable")[:3]
        assert res.ids[qi] == [ids[i] for i in order]
        assert res.scores[qi] == pytest.approx(want[order].tolist(), abs=1e-5)
    only_dense = fuse_with_dense(dense, q, bm, QUERIES, top_k=3, weights={"dense": 1, "bm25": 0})
    assert only_dense.ids == dense.search(q, 3).ids


def test_rrf_fusion_and_errors():
    dense, bm, q, _, ids = _toy_dense()
    res = fuse_with_dense(dense, q, bm, QUERIES, top_k=4, fusion="rrf", rrf_k=10)
    d, b = dense.search(q, 100), bm.search(QUERIES, 100)
    want = rrf_scores({"dense": d.ids[0], "bm25": b.ids[0]}, {"dense": 0.5, "bm25": 0.5}, 10)
    assert set(res.ids[0]) <= set(want)
    assert [want[x] for x in res.ids[0]] == pytest.approx(res.scores[0])
    assert res.scores[0] == pytest.approx(sorted(want.values(), reverse=True)[:4])
    with pytest.raises(ValueError, match="query vectors"):
        fuse_with_dense(dense, q[:2], bm, QUERIES)
    with pytest.raises(ValueError, match="fusion"):
        fuse_with_dense(dense, q, bm, QUERIES, fusion="max")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="weights"):
        fuse_with_dense(dense, q, bm, QUERIES, weights={"sparse": 1.0})


def test_corpora_without_tokens_and_emptied_indexes():
    ix = BM25Index()
    assert ix.search([["a"], ["b"]], 3).ids == [[], []]
    ix.add(["a"], ["x y"])  # single characters are not tokens by default: nothing to score
    assert ix.search("x").ids == [[]] and ix.scores("x", ["a"]).tolist() == [[0.0]]
    ix.add(["b"], ["hello world"])
    assert ix.search("hello").ids == [["b"]]
    ix.remove(["a", "b"])
    assert ix.search("hello").ids == [[]] and len(ix) == 0
