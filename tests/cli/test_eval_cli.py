"""``flagembed eval retrieval|sts|mteb`` through typer's CliRunner on the tiny BERT."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import spearmanr
from tiny_eval import write_beir
from typer.testing import CliRunner

from flagembed.cli import app

runner = CliRunner()


def test_eval_retrieval_writes_results_and_reuses_cache(tiny_bert, tmp_path):
    data = write_beir(tmp_path / "toy")
    out = tmp_path / "out"
    args = ["eval", "retrieval", "-m", str(tiny_bert), "-d", str(data), "-o", str(out), "--k-values", "1,3,10"]
    res = runner.invoke(app, [*args, "--device", "cpu", "--plot"])
    assert res.exit_code == 0, res.output
    assert "ndcg_at_10" in res.output
    files = list(out.rglob("toy-test.json"))
    assert len(files) == 1
    record = json.loads(files[0].read_text())
    assert set(record["metrics"]) >= {"ndcg_at_10", "recall_at_3", "mrr_at_10", "precision_at_1"}
    assert record["config"]["model"]["pooling"] and record["config_hash"] and record["flagembed_version"]
    assert set(record["per_query"]) == {"q1", "q2", "q3"}
    assert (out / "eval_results.md").read_text().startswith("## ndcg_at_10")
    assert (out / "recall_at_k.png").stat().st_size > 0
    search = json.loads(files[0].with_suffix(".search.json").read_text())
    assert set(search) == {"q1", "q2", "q3"}
    cached = sorted(p.name for p in (out / "embedding_cache").glob("*.npy"))
    assert len(cached) == 2
    again = runner.invoke(app, [*args, "--device", "cpu"])
    assert again.exit_code == 0, again.output
    assert json.loads(files[0].read_text())["stats"]["cache_hits"] == 2
    assert sorted(p.name for p in (out / "embedding_cache").glob("*.npy")) == cached


def test_eval_retrieval_bad_split(tiny_bert, tmp_path):
    data = write_beir(tmp_path / "toy")
    res = runner.invoke(
        app,
        [
            "eval",
            "retrieval",
            "-m",
            str(tiny_bert),
            "-d",
            str(data),
            "-o",
            str(tmp_path / "o"),
            "--split",
            "dev",
            "--device",
            "cpu",
        ],
    )
    assert res.exit_code == 2 and "no qrels for split 'dev'" in res.output


def test_eval_sts(tiny_bert, tmp_path):
    s1, s2 = ["a cat", "a dog barks", "rain falls", "we bake bread"], ["the cat", "stocks", "it rains", "bread"]
    gold = [4.0, 1.0, 3.5, 3.0]
    tsv = tmp_path / "pairs.tsv"
    tsv.write_text("sentence1\tsentence2\tscore\n" + "".join(f"{a}\t{b}\t{g}\n" for a, b, g in zip(s1, s2, gold)))
    res = runner.invoke(
        app, ["eval", "sts", "-m", str(tiny_bert), "-d", str(tsv), "-o", str(tmp_path / "o"), "--device", "cpu"]
    )
    assert res.exit_code == 0, res.output
    record = json.loads(next((tmp_path / "o").rglob("pairs-test.json")).read_text())
    from flagembed.inference import Embedder

    emb = Embedder(str(tiny_bert), device="cpu")
    a, b = emb.encode(s1), emb.encode(s2)
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert record["metrics"]["cosine_spearman"] == pytest.approx(spearmanr(gold, cos)[0], abs=1e-6)


def test_eval_mteb_needs_tasks(tiny_bert):
    res = runner.invoke(app, ["eval", "mteb", "-m", str(tiny_bert), "--device", "cpu"])
    assert res.exit_code == 2 and "--tasks or --benchmark" in res.output


def test_eval_retrieval_with_reranker(tiny_bert, tmp_path):
    import tiny_models

    from flagembed.evaluate import load_retrieval
    from flagembed.inference import Reranker

    rr_path = tiny_models.build_bert(tmp_path / "tiny-rr", classifier=True)
    data_dir = write_beir(tmp_path / "toy")
    out = tmp_path / "out"
    res = runner.invoke(
        app,
        ["eval", "retrieval", "-m", str(tiny_bert), "-d", str(data_dir), "-o", str(out), "--k-values", "1,3",
         "--rerank", str(rr_path), "--rerank-top-k", "2", "--device", "cpu"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    reranked = [p for p in out.rglob("toy-test.search.json") if "NoReranker" not in p.parts]
    assert len(reranked) == 1
    hits = json.loads(reranked[0].read_text())
    data = load_retrieval(data_dir)
    texts = dict(zip(data.doc_ids(), data.doc_texts()))
    reranker = Reranker(str(rr_path), device="cpu")
    for qid, docs in hits.items():
        assert len(docs) == 2
        direct = reranker.compute_score([(data.queries[qid], texts[d]) for d in docs])
        assert list(docs.values()) == pytest.approx(list(np.ravel(direct)), abs=1e-4)
