"""Retrieval evaluation: search equals brute force, metrics equal pytrec_eval, reranking, identical ids."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from flagembed.evaluate import evaluate_retrieval, load_retrieval
from flagembed.evaluate.retrieval import (
    check_retrieval_args,
    dense_search,
    fuse_scores,
    main_k,
    rerank_run,
    summary_metrics,
)

pytrec_eval = pytest.importorskip("pytrec_eval")


def _brute_force(embedder, data):
    q = embedder.encode_queries(list(data.queries.values()))
    d = embedder.encode_corpus(data.doc_texts())
    return q @ d.T


def test_dense_retrieval_matches_brute_force_and_pytrec(tiny_embedder, beir_dir):
    data = load_retrieval(beir_dir)
    (res,) = evaluate_retrieval(tiny_embedder, data, k_values=(1, 3, 5))
    scores = _brute_force(tiny_embedder, data)
    docs = data.doc_ids()
    for i, qid in enumerate(data.queries):
        got = res.search_results[qid]
        assert set(got) == set(docs)
        for j, did in enumerate(docs):
            assert got[did] == pytest.approx(float(scores[i, j]), abs=1e-5)
    ref = pytrec_eval.RelevanceEvaluator(data.qrels, {"ndcg_cut.1,3,5", "recall.1,3,5"}).evaluate(res.search_results)
    for k in (1, 3, 5):
        assert res.metrics[f"ndcg_at_{k}"] == pytest.approx(np.mean([v[f"ndcg_cut_{k}"] for v in ref.values()]))
    assert res.main_score == "ndcg_at_5" and res.main_score in res.metrics  # 10 not asked: largest k below it
    assert res.config["model"]["pooling"] == "cls"
    assert res.stats["unknown_doc_qrels"] == 1


def test_ignore_identical_ids():
    q = np.eye(2, dtype=np.float32)
    d = np.array([[1, 0], [0.9, 0.1], [0, 1]], dtype=np.float32)
    run = dense_search(q, d, ["a", "z"], ["a", "b", "c"], top_k=2, ignore_identical_ids=True)
    assert list(run["a"]) == ["b", "c"]  # "a" dropped, still 2 hits
    assert list(run["z"]) == ["c", "b"]


class KeywordReranker:
    """Scores a pair by word overlap (an independent, inspectable reranker)."""

    def __init__(self):
        self.calls = 0

    def compute_score(self, pairs):
        self.calls += 1
        return [len(set(q.split()) & set(p.split())) for q, p in pairs]


def test_rerank_top_k(tiny_embedder, beir_dir):
    data = load_retrieval(beir_dir)
    reranker = KeywordReranker()
    base, reranked = evaluate_retrieval(tiny_embedder, data, reranker=reranker, rerank_top_k=3, k_values=(1, 3, 5))
    assert reranker.calls == 1  # one compute_score call for all pairs
    assert "recall_at_5" in base.metrics and "recall_at_5" not in reranked.metrics  # 3 reranked hits: no @5
    assert reranked.main_score == "ndcg_at_3" and "recall_at_3" in reranked.metrics
    assert reranked.reranker == "KeywordReranker" and base.reranker is None
    texts = dict(zip(data.doc_ids(), data.doc_texts()))
    for qid, hits in reranked.search_results.items():
        top3 = sorted(base.search_results[qid].items(), key=lambda kv: -kv[1])[:3]
        assert set(hits) == {d for d, _ in top3}
        for did, s in hits.items():
            assert s == len(set(data.queries[qid].split()) & set(texts[did].split()))


def test_rerank_rejects_wrong_score_count(beir_dir):
    data = load_retrieval(beir_dir)

    class Broken:
        def compute_score(self, pairs):
            return [0.0]

    with pytest.raises(ValueError, match="returned 1 scores"):
        rerank_run(Broken(), {"q1": {"d1": 1.0, "d2": 0.5}}, data, 2)


def test_fuse_scores_by_hand():
    rerank = {"a": 4.0, "b": 0.0, "c": 2.0}  # logits: b < c < a
    retrieval = {"a": 0.50, "b": 0.90, "c": 0.70}  # cosines: a < c < b
    got = fuse_scores(rerank, retrieval, 0.75)
    r = np.array([4.0, 0.0, 2.0])
    b = np.array([0.5, 0.9, 0.7])
    want = 0.75 * (r - r.mean()) / r.std() + 0.25 * (b - b.mean()) / b.std()  # population std, per query
    assert list(got) == ["a", "b", "c"]
    assert [got[d] for d in "abc"] == pytest.approx(list(want), abs=1e-12)
    assert fuse_scores(rerank, retrieval, 1.0) == rerank  # 1: the raw reranker scores
    zero = fuse_scores(rerank, retrieval, 0.0)
    assert sorted(zero, key=zero.get) == ["a", "c", "b"]  # 0: the retriever's order
    flat = fuse_scores({"a": 1.0, "b": 1.0}, {"a": 0.2, "b": 0.4}, 0.5)  # a constant side adds nothing
    assert flat["b"] > flat["a"] and flat["a"] == pytest.approx(-0.5)


def test_rerank_run_fuses_with_the_retrieval_scores(beir_dir):
    data = load_retrieval(beir_dir)
    qid = next(iter(data.queries))
    docs = data.doc_ids()[:3]
    run = {qid: {docs[0]: 0.9, docs[1]: 0.5, docs[2]: 0.1}}
    reranker = KeywordReranker()
    raw = rerank_run(reranker, run, data, 3)
    fused = rerank_run(reranker, run, data, 3, rerank_weight=0.4)
    assert fused[qid] == pytest.approx(fuse_scores(raw[qid], run[qid], 0.4))
    assert reranker.calls == 2
    with pytest.raises(ValueError, match=r"rerank_weight must be in \[0, 1\].*got 1.5"):
        rerank_run(reranker, run, data, 3, rerank_weight=1.5)


def test_fused_reranking_in_evaluate_retrieval(tiny_embedder, beir_dir):
    data = load_retrieval(beir_dir)
    base, fused = evaluate_retrieval(
        tiny_embedder, data, reranker=KeywordReranker(), rerank_top_k=3, rerank_weight=0.5, k_values=(1, 3)
    )
    assert fused.config["reranker"]["rerank_weight"] == 0.5
    for qid, hits in fused.search_results.items():
        top3 = dict(sorted(base.search_results[qid].items(), key=lambda kv: -kv[1])[:3])
        raw = {d: float(len(set(data.queries[qid].split()) & set(t.split())))
               for d, t in zip(data.doc_ids(), data.doc_texts()) if d in top3}  # fmt: skip
        assert hits == pytest.approx(fuse_scores(raw, top3, 0.5))
    with pytest.raises(ValueError, match="rerank_weight"):
        evaluate_retrieval(tiny_embedder, data, reranker=KeywordReranker(), rerank_weight=-0.1)


def test_unknown_modes_and_m3_modes_need_m3(tiny_embedder, beir_dir):
    data = load_retrieval(beir_dir)
    with pytest.raises(ValueError, match="valid: dense"):
        evaluate_retrieval(tiny_embedder, data, modes=("splade",))
    with pytest.raises(ValueError, match="M3Embedder"):
        evaluate_retrieval(tiny_embedder, data, modes=("sparse",))


def test_m3_modes_match_brute_force(tmp_path, beir_dir):
    from tiny_m3 import build_m3

    from flagembed.inference import M3Embedder

    m3 = M3Embedder(build_m3(tmp_path / "m3"), device="cpu")
    data = load_retrieval(beir_dir)
    modes = ("dense", "sparse", "colbert", "hybrid", "dense+sparse")
    results = evaluate_retrieval(m3, data, modes=modes, k_values=(1, 3))
    assert [r.mode for r in results] == list(modes)
    queries, docs = list(data.queries.values()), data.doc_texts()
    q = m3.encode_queries(queries, return_sparse=True, return_colbert_vecs=True)
    d = m3.encode_corpus(docs, return_sparse=True, return_colbert_vecs=True)
    n_docs = len(docs)
    sparse = np.array(
        [[m3.compute_lexical_matching_score(a, b) for b in d["lexical_weights"]] for a in q["lexical_weights"]]
    )
    colbert = np.array([[float(m3.colbert_score(a, b)) for b in d["colbert_vecs"]] for a in q["colbert_vecs"]])
    dense = q["dense_vecs"] @ d["dense_vecs"].T
    expected = {"sparse": sparse, "colbert": colbert, "hybrid": (0.4 * dense + 0.2 * sparse + 0.4 * colbert)}
    expected["dense+sparse"] = (0.4 * dense + 0.2 * sparse) / 0.6  # default weights, renormalised to sum 1
    for r in results[1:]:
        for i, qid in enumerate(data.queries):
            got = r.search_results[qid]
            assert len(got) == n_docs or r.mode == "sparse"  # the inverted index returns only overlapping docs
            for j, did in enumerate(data.doc_ids()):
                want = expected[r.mode][i, j]
                assert got.get(did, 0.0) == pytest.approx(want, abs=1e-4), (r.mode, qid, did)


def test_m3_modes_encode_the_corpus_once_dense_included(tmp_path, beir_dir, monkeypatch):
    from tiny_m3 import build_m3

    from flagembed.inference import M3Embedder

    m3 = M3Embedder(build_m3(tmp_path / "m3"), device="cpu")
    data = load_retrieval(beir_dir)
    (alone,) = evaluate_retrieval(m3, data, modes=("dense",), k_values=(1, 3))
    calls = []
    encode = m3.encode_corpus
    monkeypatch.setattr(m3, "encode_corpus", lambda *a, **kw: calls.append(kw) or encode(*a, **kw))
    dense, _ = evaluate_retrieval(m3, data, modes=("dense", "colbert"), k_values=(1, 3))
    assert len(calls) == 1 and calls[0]["return_colbert_vecs"]  # one pass gave both modes
    for qid, hits in alone.search_results.items():
        assert list(dense.search_results[qid]) == list(hits)
        assert list(dense.search_results[qid].values()) == pytest.approx(list(hits.values()), abs=1e-5)
    assert dense.metrics == pytest.approx(alone.metrics)
    calls.clear()  # with a cache the searcher is saved; a rerun (other weights, same corpus) loads it
    cache = tmp_path / "cache"
    first = evaluate_retrieval(m3, data, modes=("dense", "hybrid"), k_values=(1, 3), cache_dir=cache)
    assert len(calls) == 1 and first[0].stats["cache_hits"] == 0
    again = evaluate_retrieval(m3, data, modes=("dense", "hybrid"), k_values=(1, 3), cache_dir=cache,
                               m3_weights="1,0,1")  # fmt: skip
    assert len(calls) == 1 and again[0].stats["cache_hits"] == 1
    assert again[0].search_results == first[0].search_results
    (fresh,) = evaluate_retrieval(m3, data, modes=("hybrid",), k_values=(1, 3), m3_weights="1,0,1")
    for qid, hits in fresh.search_results.items():  # the reloaded indexes score as freshly built ones
        assert list(again[1].search_results[qid]) == list(hits)
        assert list(again[1].search_results[qid].values()) == pytest.approx(list(hits.values()), abs=1e-6)
    changed = {**next(iter(data.corpus.values())), "text": "another text"}  # another corpus: a new key
    other = dataclasses.replace(data, corpus={**data.corpus, next(iter(data.corpus)): changed})
    calls.clear()
    evaluate_retrieval(m3, other, modes=("hybrid",), k_values=(1, 3), cache_dir=cache)
    assert len(calls) == 1


def test_m3_weights_reweight_the_fused_modes(tmp_path, beir_dir):
    from tiny_m3 import build_m3

    from flagembed.inference import M3Embedder

    m3 = M3Embedder(build_m3(tmp_path / "m3"), device="cpu")
    data = load_retrieval(beir_dir)
    hybrid, dense_sparse = evaluate_retrieval(m3, data, modes=("hybrid", "dense+sparse"), k_values=(1, 3),
                                              m3_weights="1,0,3")  # fmt: skip
    assert hybrid.config["eval"]["m3_weights"] == {"dense": 1.0, "sparse": 0.0, "colbert": 3.0}
    q = m3.encode_queries(list(data.queries.values()), return_colbert_vecs=True)
    d = m3.encode_corpus(data.doc_texts(), return_colbert_vecs=True)
    dense = q["dense_vecs"] @ d["dense_vecs"].T
    colbert = np.array([[float(m3.colbert_score(a, b)) for b in d["colbert_vecs"]] for a in q["colbert_vecs"]])
    for i, qid in enumerate(data.queries):
        for j, did in enumerate(data.doc_ids()):
            want = (dense[i, j] + 3 * colbert[i, j]) / 4  # weights renormalised to sum 1
            assert hybrid.search_results[qid][did] == pytest.approx(want, abs=1e-4)
            assert dense_sparse.search_results[qid].get(did, 0.0) == pytest.approx(dense[i, j], abs=1e-4)
    with pytest.raises(ValueError, match="zero sum"):
        evaluate_retrieval(m3, data, modes=("dense+sparse",), m3_weights="0,0,1")
    with pytest.raises(ValueError, match="got 2 weights for 3 modes"):
        evaluate_retrieval(m3, data, modes=("hybrid",), m3_weights="1,2")


def test_top_k_below_a_cutoff_is_refused(tiny_embedder, beir_dir):
    data = load_retrieval(beir_dir)
    with pytest.raises(ValueError, match="k = 100 exceeds search_top_k = 5"):
        evaluate_retrieval(tiny_embedder, data, search_top_k=5, k_values=(1, 10, 100))
    assert check_retrieval_args(["dense"], [10, 1, 10], 10) == [1, 10]
    with pytest.raises(ValueError, match="every k must be >= 1"):
        check_retrieval_args(["dense"], [0, 5], 10)
    with pytest.raises(ValueError, match="'foo' is unknown; valid: dense, sparse, colbert, hybrid"):
        check_retrieval_args(["dense", "foo"], [1], 10)
    with pytest.raises(ValueError, match="every k exceeds rerank_top_k = 5"):
        check_retrieval_args(["dense"], [10, 100], 100, rerank_top_k=5)


def test_summary_metrics_follow_the_asked_cutoffs():
    assert main_k((1, 5)) == 5 and main_k((1, 3, 5, 10, 100)) == 10 and main_k((20, 50)) == 20
    assert summary_metrics((1, 5)) == ["ndcg_at_5", "mrr_at_5", "recall_at_5"]
    assert summary_metrics((1, 3, 5, 10, 100, 1000)) == [
        "ndcg_at_10", "mrr_at_10", "recall_at_10", "recall_at_100", "recall_at_1000"
    ]  # fmt: skip
