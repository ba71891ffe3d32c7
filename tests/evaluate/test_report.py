"""Reports: JSON records (atomic, round trip), markdown tables (×100, best bold, average), plots."""

from __future__ import annotations

import json

import pytest

from flagembed.evaluate import EvalResult, load_results, markdown_table, plot_curves, write_result
from flagembed.evaluate.report import result_path


def _result(model="m/a", dataset="toy", ndcg=0.5, reranker=None):
    return EvalResult(
        task="retrieval",
        dataset=dataset,
        split="test",
        model=model,
        metrics={"ndcg_at_10": ndcg, "recall_at_1": ndcg / 2, "recall_at_10": ndcg},
        main_score="ndcg_at_10",
        config={"model": {"name": model, "pooling": "cls"}},
        reranker=reranker,
        search_results={"q": {"d": 1.0}},
    )


def test_write_and_load_round_trip(tmp_path):
    r = _result()
    path = write_result(r, tmp_path, search_results=True)
    assert path == result_path(r, tmp_path) and path.parent.name == "NoReranker"
    record = json.loads(path.read_text())
    assert record["config_hash"] == r.config_hash and "search_results" not in record
    assert json.loads(path.with_suffix(".search.json").read_text()) == {"q": {"d": 1.0}}
    assert not list(tmp_path.rglob(".*.tmp"))  # atomic writes leave no temporaries
    (loaded,) = load_results(tmp_path)
    assert loaded.metrics == r.metrics and loaded.config_hash == r.config_hash


def test_config_hash_changes_with_config():
    a, b = _result(), _result()
    b.config["model"]["pooling"] = "mean"
    assert a.config_hash != b.config_hash


def test_markdown_table():
    rows = [_result("A", "x", 0.5), _result("A", "y", 0.7), _result("B", "x", 0.55, reranker="R")]
    text = markdown_table(rows)
    lines = text.splitlines()
    assert lines[0] == "## ndcg_at_10"
    assert lines[2] == "| Model | Reranker | x-test | y-test | average |"
    assert lines[4] == "| A | NoReranker | 50.000 | **70.000** | **60.000** |"
    assert lines[5] == "| B | R | **55.000** |  | 55.000 |"
    with pytest.raises(ValueError, match="no result has metric"):
        markdown_table(rows, "map_at_10")


def test_plot(tmp_path):
    pytest.importorskip("matplotlib")
    out = plot_curves([_result()], tmp_path / "curves.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="no result has"):
        plot_curves([_result()], tmp_path / "x.png", metric="map")
