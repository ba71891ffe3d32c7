"""``flagembed rerank`` on a tiny cross-encoder and a tiny LLM reranker."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tiny_models
import tiny_rerankers
from typer.testing import CliRunner

from flagembed.cli import app
from flagembed.inference import LLMReranker, Reranker

DOCS = ["the cell is a small protein", "hiv drug therapy", "blood virus in mouse"]


@pytest.fixture(scope="module")
def docs_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "docs.txt"
    path.write_text("\n".join(DOCS) + "\n", encoding="utf-8")
    return path


def test_rerank_table_and_json(tmp_path: Path, docs_file: Path) -> None:
    model = tiny_models.build_bert(tmp_path / "ce", seed=7, classifier=True)
    runner = CliRunner()
    table = runner.invoke(
        app, ["rerank", "-m", str(model), "-q", "what is the cell", "--docs", str(docs_file), "--device", "cpu"]
    )
    assert table.exit_code == 0, table.output
    assert "rank" in table.output and "the cell is a small protein" in table.output
    out = runner.invoke(
        app,
        [
            "rerank",
            "-m",
            str(model),
            "-q",
            "what is the cell",
            "--docs",
            str(docs_file),
            "--json",
            "-k",
            "2",
            "--device",
            "cpu",
        ],
    )
    assert out.exit_code == 0, out.output
    rows = json.loads(out.stdout)
    scores = Reranker(model, device="cpu").compute_score([("what is the cell", d) for d in DOCS])
    best = sorted(range(3), key=lambda i: -scores[i])[:2]
    assert [r["index"] for r in rows] == best
    assert rows[0]["score"] == pytest.approx(scores[best[0]], rel=1e-5)


def test_rerank_llm_kind_and_errors(tmp_path: Path, docs_file: Path) -> None:
    model = tiny_rerankers.build_decoder_lm(tmp_path / "lm", "qwen2", layers=2)
    runner = CliRunner()
    args = ["rerank", "-m", str(model), "-q", "hiv", "--docs", str(docs_file), "--kind", "llm", "--json"]
    args += ["--device", "cpu"]
    out = runner.invoke(app, args)
    assert out.exit_code == 0, out.output
    scores = LLMReranker(model, device="cpu").compute_score([("hiv", d) for d in DOCS])
    assert max(r["score"] for r in json.loads(out.stdout)) == pytest.approx(max(scores), rel=1e-5)
    bad = runner.invoke(app, ["rerank", "-m", str(model), "-q", "x", "--docs", str(docs_file), "--kind", "nope"])
    assert bad.exit_code == 2 and "unknown --kind" in bad.output


def test_rerank_refuses_a_checkpoint_without_reranker_weights(tmp_path: Path, docs_file: Path) -> None:
    embedder = tiny_models.build_bert(tmp_path / "emb")
    ce = tiny_models.build_bert(tmp_path / "ce", classifier=True)
    runner = CliRunner()
    res = runner.invoke(app, ["rerank", "-m", str(embedder), "-q", "cell", "--docs", str(docs_file), "--device", "cpu"])
    assert res.exit_code == 2 and "no trained classification head" in res.output
    llm = ["rerank", "-m", str(ce), "-q", "cell", "--docs", str(docs_file), "--kind", "llm", "--device", "cpu"]
    res = runner.invoke(app, llm)
    assert res.exit_code == 2 and "no trained LM head" in res.output


def test_rerank_refuses_top_k_zero_and_an_empty_query(tmp_path: Path, docs_file: Path) -> None:
    model = tiny_models.build_bert(tmp_path / "ce", seed=7, classifier=True)
    runner = CliRunner()
    base = ["rerank", "-m", str(model), "--docs", str(docs_file), "--device", "cpu"]
    res = runner.invoke(app, [*base, "-q", "cell", "-k", "0"])
    assert res.exit_code == 2 and "top_k must be a positive integer" in res.output
    for query in ("", "   "):
        res = runner.invoke(app, [*base, "-q", query])
        assert res.exit_code == 2 and "query is empty" in res.output
        assert len(res.output.strip().splitlines()) == 1
