"""Reports: JSON records (atomic, round trip), markdown tables (×100, best bold, average), plots."""

from __future__ import annotations

import json

import pytest

from flagembed.evaluate import (
    EvalResult,
    display,
    load_results,
    markdown_table,
    plot_curves,
    write_report,
    write_result,
)
from flagembed.evaluate.report import result_path


def _result(model="m/a", dataset="toy", ndcg=0.5, reranker=None, split="test"):
    return EvalResult(
        task="retrieval",
        dataset=dataset,
        split=split,
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
    assert lines[4] == "| A | NoReranker | 50.00 | **70.00** | **60.00** |"
    assert lines[5] == "| B | R | **55.00** |  | 55.00 |"
    with pytest.raises(ValueError, match="no result has metric"):
        markdown_table(rows, "map_at_10")


def test_plot(tmp_path):
    pytest.importorskip("matplotlib")
    out = plot_curves([_result()], tmp_path / "curves.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="no result has"):
        plot_curves([_result()], tmp_path / "x.png", metric="map")


def test_display_scale_is_percent_with_two_decimals():
    assert display(0.775834) == "77.58" and display(1.0) == "100.00" and display(0.0) == "0.00"


def _sts(dataset, rho, split="test"):
    return EvalResult(
        task="sts",
        dataset=dataset,
        split=split,
        model="M",
        metrics={"cosine_spearman": rho, "cosine_pearson": rho - 0.01},
        main_score="cosine_spearman",
        config={"model": {"name": "M"}},
    )


def test_report_keeps_every_result_in_the_folder(tmp_path):
    write_result(_sts("SICK-R", 0.7758), tmp_path)
    write_report(tmp_path)
    write_result(_sts("stsb-zh", 0.4), tmp_path)  # a second command into the same folder
    write_result(_result("A", "toy", 0.5), tmp_path)
    text = write_report(tmp_path).read_text()
    assert text.index("# retrieval") < text.index("## ndcg_at_10") < text.index("# sts")
    assert "| M | NoReranker | 77.58 | 40.00 | 58.79 |" in text  # both datasets, ×100
    assert "## cosine_pearson" in text and "## recall_at_10" in text
    assert "| SICK-R-test | stsb-zh-test | average |" in text
    (tmp_path / "M" / "NoReranker" / "broken.json").write_text("{")
    with pytest.raises(ValueError, match="broken.json: not a readable result JSON"):
        write_report(tmp_path)
