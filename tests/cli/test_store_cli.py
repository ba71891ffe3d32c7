"""`--store` (Milvus Lite) for `flagembed index build`, `flagembed search` and `flagembed eval retrieval`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flagembed.cli import app

pytest.importorskip("pymilvus", reason="pymilvus is not installed")
pytest.importorskip("milvus_lite", reason="milvus-lite is not installed")

runner = CliRunner()
CORPUS = [
    {"_id": "g1", "title": "genes", "text": "gene expression in cancer cells of patients", "year": 2001},
    {"_id": "g2", "title": "proteins", "text": "protein function in the human brain", "year": 2012},
    {"_id": "v1", "title": "vectors", "text": "dense vector search model", "year": 2020},
    {"_id": "b1", "title": "blood", "text": "the virus was found in blood of mouse and human", "year": 2022},
]


@pytest.fixture(scope="module")
def m3_corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from tiny_m3 import build_m3

    folder = tmp_path_factory.mktemp("store")
    corpus = folder / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(d) + "\n" for d in CORPUS), encoding="utf-8")
    return build_m3(folder / "m3"), corpus


def _hits(args: list[str]) -> list[dict]:
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    return json.loads(res.output.strip().splitlines()[-1])


def test_build_and_search_store_equal_index_dir(m3_corpus, tmp_path: Path) -> None:
    model, corpus = m3_corpus
    common = ["-m", str(model), "--corpus", str(corpus), "--modes", "dense,sparse", "--device", "cpu"]
    res = runner.invoke(app, ["index", "build", *common, "--store", str(tmp_path / "s.db")])
    assert res.exit_code == 0, res.output
    assert "indexed 4 documents (dense, sparse)" in res.output
    res = runner.invoke(app, ["index", "build", *common, "--out", str(tmp_path / "ix")])
    assert res.exit_code == 0, res.output
    for modes in ("sparse", "dense,sparse"):
        q = ["gene cancer", "-k", "3", "--json", "--modes", modes, "--device", "cpu"]
        milvus = _hits(["search", "--store", str(tmp_path / "s.db"), *q])
        local = _hits(["search", str(tmp_path / "ix"), *q])
        assert [h["id"] for h in milvus] == [h["id"] for h in local]
        assert [h["score"] for h in milvus] == pytest.approx([h["score"] for h in local], abs=1e-5)
    where = ["--filter", 'metadata["year"] > 2010']
    recent = _hits(["search", "--store", str(tmp_path / "s.db"), "gene", "--json", *where])
    assert {h["id"] for h in recent} <= {"g2", "v1", "b1"} and recent[0]["metadata"]["year"] > 2010
    again = runner.invoke(app, ["index", "build", *common, "--store", str(tmp_path / "s.db")])
    assert again.exit_code != 0 and "already exists" in again.output


def test_store_arguments_fail_fast(tmp_path: Path) -> None:
    res = runner.invoke(app, ["search", "--store", str(tmp_path / "x.sqlite"), "query"])
    assert res.exit_code != 0 and "milvus://host:port/collection" in res.output
    res = runner.invoke(app, ["search", str(tmp_path), "query", "--filter", "id == 'a'"])
    assert res.exit_code != 0 and "--filter needs --store" in res.output
    res = runner.invoke(app, ["index", "build", "-m", "x", "--corpus", "c.jsonl"])
    assert res.exit_code != 0 and "exactly one of --out" in res.output


@pytest.mark.slow
def test_eval_retrieval_store_gives_the_in_process_ndcg(shared_data: Path, minilm_path: Path, tmp_path: Path) -> None:
    """all-MiniLM-L6-v2 on a 120-abstract slice of SciFact-train (the full 5,183 take many minutes on CI).

    Both runs share one output folder, so the second reuses the first's cached embeddings: what differs is
    only where the search runs.
    """
    src = shared_data / "scifact-train"
    if not (src / "corpus.jsonl").is_file():
        pytest.skip("scifact-train is absent")
    qrels = [line.split("\t") for line in (src / "qrels" / "train.tsv").read_text().splitlines()[1:41]]
    wanted = {d for _, d, _ in qrels}
    docs = [json.loads(line) for line in (src / "corpus.jsonl").read_text().splitlines()]
    keep = [d for d in docs if d["_id"] in wanted] + [d for d in docs if d["_id"] not in wanted][: 120 - len(wanted)]
    qids = {q for q, _, _ in qrels}
    data = tmp_path / "scifact-slice"
    (data / "qrels").mkdir(parents=True)
    (data / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in keep))
    queries = [line for line in (src / "queries.jsonl").read_text().splitlines() if json.loads(line)["_id"] in qids]
    (data / "queries.jsonl").write_text("\n".join(queries) + "\n")
    rows = "".join("\t".join(r) + "\n" for r in qrels)
    (data / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\n" + rows)
    scores = []
    for extra in ([], ["--store", str(tmp_path / "eval.db")]):
        out = tmp_path / "out"
        args = ["eval", "retrieval", "-m", str(minilm_path), "-d", str(data), "-o", str(out), "--split", "train"]
        res = runner.invoke(app, [*args, "--k-values", "1,10", "--search-top-k", "10", "--device", "cpu", *extra])
        assert res.exit_code == 0, res.output
        record = json.loads(next(out.rglob("scifact-slice-train.json")).read_text())
        scores.append(record["metrics"]["ndcg_at_10"])
    assert scores[0] > 0.3  # a real model on real data
    assert scores[1] == pytest.approx(scores[0], abs=1e-6)
