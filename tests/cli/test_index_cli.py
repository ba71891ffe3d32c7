"""`flagembed index build` and `flagembed search` through typer's CliRunner."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from flagembed.cli import app

DOCS = [
    {"_id": "g1", "title": "genes", "text": "the protein gene cancer study"},
    {"_id": "v1", "title": "vectors", "text": "dense vector search model"},
    {"_id": "h1", "title": "", "text": "blood virus hiv drug therapy"},
    {"_id": "c1", "title": "places", "text": "city country water fire earth"},
]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory):
    from tiny_m3 import build_m3

    tmp = tmp_path_factory.mktemp("cli")
    model = build_m3(tmp / "tiny-m3")
    corpus = tmp / "corpus.jsonl"
    corpus.write_text("\n".join(json.dumps(d) for d in DOCS) + "\n", encoding="utf-8")
    out = tmp / "idx"
    result = CliRunner().invoke(
        app, ["index", "build", "--model", str(model), "--corpus", str(corpus), "--out", str(out), "--device", "cpu"]
    )
    assert result.exit_code == 0, result.output
    assert "indexed 4 documents (dense, sparse, colbert)" in result.output
    return model, corpus, out


def test_search_table_and_json(built) -> None:
    from flagembed import M3Embedder
    from flagembed.index import HybridSearcher

    model, _, out = built
    runner = CliRunner()
    table = runner.invoke(app, ["search", str(out), "gene cancer", "--top-k", "2", "--device", "cpu"])
    assert table.exit_code == 0, table.output
    assert ["rank", "id", "score"] in [line.split() for line in table.stdout.splitlines()]
    res = runner.invoke(app, ["search", str(out), "gene cancer", "-k", "3", "--json", "--modes", "dense,sparse",
                              "--weights", "1,1", "--device", "cpu"])  # fmt: skip
    assert res.exit_code == 0, res.output
    hits = json.loads(res.stdout)
    ref = HybridSearcher.load(out, embedder=M3Embedder(model, device="cpu")).search(
        "gene cancer", 3, modes=["dense", "sparse"], weights=[1, 1]
    )
    assert [h["id"] for h in hits] == ref.ids[0]
    assert [h["rank"] for h in hits] == list(range(1, len(hits) + 1))


def test_errors(built, tmp_path) -> None:
    model, corpus, out = built
    runner = CliRunner()
    bad_mode = runner.invoke(app, ["search", str(out), "gene", "--modes", "bm25", "--device", "cpu"])
    assert bad_mode.exit_code == 2 and "not a mode" in bad_mode.output
    bad_w = runner.invoke(app, ["search", str(out), "gene", "--weights", "1,2", "--device", "cpu"])
    assert bad_w.exit_code == 2 and "2 weights for 3 modes" in bad_w.output
    missing = runner.invoke(app, ["search", str(tmp_path), "gene"])
    assert missing.exit_code == 2 and "not a flagembed index" in missing.output
    bad_corpus = tmp_path / "bad.jsonl"
    bad_corpus.write_text('{"text": "no id"}\n')
    res = runner.invoke(
        app, ["index", "build", "-m", str(model), "--corpus", str(bad_corpus), "-o", str(tmp_path / "x")]
    )
    assert res.exit_code == 2 and "record 0" in res.output
