"""Vectorized metrics against pytrec_eval (and BEIR's MRR/capped recall definitions) on random runs."""

from __future__ import annotations

import numpy as np
import pytest

from flagembed.evaluate.metrics import evaluate_run, results_to_run

pytrec_eval = pytest.importorskip("pytrec_eval")

KS = (1, 3, 5, 10, 50)


def _random_case(seed: int, n_queries: int = 60, n_docs: int = 80, graded: bool = True):
    rng = np.random.default_rng(seed)
    docs = [f"d{i}" for i in range(n_docs)]
    qrels, run = {}, {}
    for q in range(n_queries):
        judged = rng.choice(docs, size=int(rng.integers(1, 12)), replace=False)
        qrels[f"q{q}"] = {d: int(rng.integers(0, 4 if graded else 2)) for d in judged}
        retrieved = rng.choice(docs, size=int(rng.integers(0, 70)), replace=False)
        # coarse scores -> many ties, which trec_eval breaks by doc id (descending)
        run[f"q{q}"] = {d: float(rng.integers(0, 6)) / 5 for d in retrieved}
    return qrels, run


def _reference(qrels, run):
    ks = ",".join(map(str, KS))
    measures = {f"ndcg_cut.{ks}", f"map_cut.{ks}", f"recall.{ks}", f"P.{ks}"}
    return pytrec_eval.RelevanceEvaluator(qrels, measures).evaluate(run)


def _trec_order(hits):
    """trec_eval's ranking, written independently: score desc, then doc id desc."""
    return [d for d, _ in sorted(hits.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("graded", [True, False])
def test_matches_pytrec_eval_per_query_and_mean(seed, graded):
    qrels, run = _random_case(seed, graded=graded)
    ours = evaluate_run(qrels, run, KS)
    ref = _reference(qrels, run)
    per_query = ours.query_scores()
    names = {"ndcg_cut": "ndcg", "map_cut": "map", "recall": "recall", "P": "precision"}
    for qid, values in ref.items():
        for trec_name, ours_name in names.items():
            for k in KS:
                assert per_query[qid][f"{ours_name}_at_{k}"] == pytest.approx(values[f"{trec_name}_{k}"], abs=1e-6)
    for trec_name, ours_name in names.items():
        for k in KS:
            mean = np.mean([v[f"{trec_name}_{k}"] for v in ref.values()])
            assert ours.scores[f"{ours_name}_at_{k}"] == pytest.approx(mean, abs=1e-6)


@pytest.mark.parametrize("seed", [3, 4])
def test_mrr_and_capped_recall(seed):
    qrels, run = _random_case(seed)
    ours = evaluate_run(qrels, run, KS).query_scores()
    for qid in qrels:
        ranked = _trec_order(run.get(qid, {}))
        relevant = {d for d, r in qrels[qid].items() if r > 0}
        for k in KS:
            first = next((i for i, d in enumerate(ranked[:k]) if d in relevant), None)
            assert ours[qid][f"mrr_at_{k}"] == pytest.approx(0.0 if first is None else 1 / (first + 1))
            hits = len(relevant & set(ranked[:k]))
            cap = min(len(relevant), k)
            assert ours[qid][f"recall_cap_at_{k}"] == pytest.approx(hits / cap if cap else 0.0)
        # pytrec_eval's reciprocal rank equals MRR at a depth covering the whole run
        rr = pytrec_eval.RelevanceEvaluator({qid: qrels[qid]}, {"recip_rank"}).evaluate({qid: run[qid]})
        if rr:
            full = evaluate_run({qid: qrels[qid]}, {qid: run[qid]}, (100,), ("mrr",)).scores["mrr_at_100"]
            assert full == pytest.approx(rr[qid]["recip_rank"], abs=1e-9)


def test_tie_breaking_by_doc_id_descending():
    qrels = {"q": {"a": 1}}
    run = {"q": {"a": 1.0, "b": 1.0, "c": 1.0}}  # trec_eval ranks c, b, a
    scores = evaluate_run(qrels, run, (1, 3), ("precision", "mrr")).scores
    assert scores["precision_at_1"] == 0.0
    assert scores["mrr_at_3"] == pytest.approx(1 / 3)


def test_judged_query_missing_from_run_scores_zero_and_unjudged_run_queries_are_ignored():
    qrels = {"q1": {"a": 1}, "q2": {"b": 1}}
    run = {"q1": {"a": 0.9}, "zzz": {"a": 1.0}}
    res = evaluate_run(qrels, run, (1,), ("ndcg", "recall"))
    assert res.query_ids == ["q1", "q2"]
    assert res.scores["ndcg_at_1"] == pytest.approx(0.5)
    assert res.skipped_run_queries == 1


def test_bad_arguments():
    with pytest.raises(ValueError, match="k_values"):
        evaluate_run({"q": {"a": 1}}, {}, (0,))
    with pytest.raises(ValueError, match="unknown"):
        evaluate_run({"q": {"a": 1}}, {}, (1,), ("bleu",))
    with pytest.raises(ValueError, match="no judged queries"):
        evaluate_run({}, {}, (1,))


def test_results_to_run():
    run = results_to_run(["q1"], [["a", "b"]], [[0.5, 0.25]])
    assert run == {"q1": {"a": 0.5, "b": 0.25}}
    with pytest.raises(ValueError, match="lengths differ"):
        results_to_run(["q1", "q2"], [["a"]], [[1.0]])


@pytest.mark.slow
def test_real_run_on_scifact_qrels(shared_data):
    """Real qrels with a random-but-fixed run: pytrec_eval agreement at BEIR depths."""
    from flagembed.evaluate import load_retrieval

    data = load_retrieval(shared_data / "scifact-train", "train")
    rng = np.random.default_rng(0)
    doc_ids = np.array(data.doc_ids())
    run = {}
    for qid, rel in data.qrels.items():
        picked = list(rng.choice(doc_ids, size=200, replace=False)) + list(rel)
        run[qid] = {str(d): float(rng.random()) for d in picked}
    ours = evaluate_run(data.qrels, run, (1, 10, 100))
    ref = pytrec_eval.RelevanceEvaluator(data.qrels, {"ndcg_cut.1,10,100", "recall.1,10,100"}).evaluate(run)
    for k in (1, 10, 100):
        assert ours.scores[f"ndcg_at_{k}"] == pytest.approx(
            np.mean([v[f"ndcg_cut_{k}"] for v in ref.values()]), abs=1e-6
        )
        assert ours.scores[f"recall_at_{k}"] == pytest.approx(
            np.mean([v[f"recall_{k}"] for v in ref.values()]), abs=1e-6
        )
