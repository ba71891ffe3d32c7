"""`flagembed index build` and `flagembed search` through typer's CliRunner."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flagembed.cli import app

ROOT = Path(__file__).resolve().parents[2]
LONG = "the protein gene cancer study " * 20
DOCS = [
    {"_id": "g1", "title": "genes", "text": LONG.strip(), "year": 2001},
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
    args = ["search", str(out), "gene cancer", "--top-k", "4", "--device", "cpu"]
    table = runner.invoke(app, args, env={"COLUMNS": "70"})
    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["rank", "id", "score", "title", "text"]
    assert all(len(line.rstrip()) <= 70 for line in lines), lines  # text cut to the terminal's width
    g1 = next(line for line in lines if line.split()[1:2] == ["g1"])
    assert "genes" in g1 and "the protein gene" in g1 and g1.rstrip().endswith("…")
    assert any("blood virus hiv drug therapy" in line for line in lines)
    res = runner.invoke(app, ["search", str(out), "gene cancer", "-k", "3", "--json", "--modes", "dense,sparse",
                              "--weights", "1,1", "--device", "cpu"])  # fmt: skip
    assert res.exit_code == 0, res.output
    hits = json.loads(res.stdout)
    ref = HybridSearcher.load(out, embedder=M3Embedder(model, device="cpu")).search(
        "gene cancer", 3, modes=["dense", "sparse"], weights=[1, 1]
    )
    assert [h["id"] for h in hits] == ref.ids[0]
    assert [h["rank"] for h in hits] == list(range(1, len(hits) + 1))
    by_id = {d["_id"]: d for d in DOCS}
    for h in hits:  # full documents, extra JSONL fields as metadata
        want = by_id[h["id"]]
        assert (h["title"], h["text"]) == (want["title"], want["text"])
        assert h["metadata"] == ({"year": 2001} if h["id"] == "g1" else {})


def test_errors(built, tmp_path) -> None:
    model, corpus, out = built
    runner = CliRunner()
    bad_mode = runner.invoke(app, ["search", str(out), "gene", "--modes", "splade", "--device", "cpu"])
    assert bad_mode.exit_code == 2 and "not a mode" in bad_mode.output
    absent = runner.invoke(app, ["search", str(out), "gene", "--modes", "bm25", "--device", "cpu"])
    assert absent.exit_code == 2 and "built with modes dense, sparse, colbert only" in absent.output
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


def test_errors_are_one_line(built, tmp_path) -> None:
    import shutil

    model, corpus, out = built
    runner = CliRunner()
    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    manifest = json.loads((bad / "manifest.json").read_text())
    manifest["params"] = {}  # used to end in a KeyError traceback
    (bad / "manifest.json").write_text(json.dumps(manifest))
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("not an index")
    build_over = ["index", "build", "-m", str(model), "--corpus", str(corpus), "-o", str(tmp_path / "notes")]
    for args in (["search", str(bad), "gene"], ["search", str(out), "gene", "-k", "0"], ["search", str(out), " "],
                 build_over):  # fmt: skip
        res = runner.invoke(app, [*args, "--device", "cpu"])
        assert res.exit_code == 2 and not isinstance(res.exception, (KeyError, RuntimeError)), res.output
        assert _one_error(res.stderr), res.stderr
    moved = tmp_path / "model"
    shutil.copytree(model, moved)
    idx = tmp_path / "idx"
    build = runner.invoke(app, ["index", "build", "-m", str(moved), "--corpus", str(corpus), "-o", str(idx)])
    assert build.exit_code == 0, build.output
    weights = moved / "sparse_linear.pt"
    weights.write_bytes(weights.read_bytes() + b"0")  # the model changed after the build
    res = runner.invoke(app, ["search", str(idx), "gene", "--device", "cpu"])
    assert res.exit_code == 2 and "other weights" in res.stderr and _one_error(res.stderr), res.stderr


def _one_error(stderr: str) -> bool:
    """One ``error: ...`` line and no traceback (progress bars of model loading aside)."""
    return "Traceback" not in stderr and len([x for x in stderr.splitlines() if x.startswith("error: ")]) == 1


def test_remote_code_index_needs_the_flag(tiny_bert, tmp_path) -> None:
    from flagembed import Embedder
    from flagembed.index import HybridSearcher

    embedder = Embedder(tiny_bert, device="cpu", trust_remote_code=True)
    HybridSearcher.build(embedder, ["gene cancer", "vector search"]).save(tmp_path / "idx")
    runner = CliRunner()
    res = runner.invoke(app, ["search", str(tmp_path / "idx"), "gene", "--device", "cpu"])
    assert res.exit_code == 2 and "--trust-remote-code" in res.stderr
    res = runner.invoke(app, ["search", str(tmp_path / "idx"), "gene", "--device", "cpu", "--trust-remote-code"])
    assert res.exit_code == 0, res.output


def _cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """The CLI in a fresh interpreter (nothing cached from the build), from ``cwd``."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    env["HF_HUB_OFFLINE"] = "1"
    code = "from flagembed.cli import main; main()"
    cmd = [sys.executable, "-c", code, *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _corpus(path: Path) -> Path:
    path.write_text("\n".join(json.dumps(d) for d in DOCS) + "\n", encoding="utf-8")
    return path


@pytest.mark.slow
def test_bundled_model_name_then_search_in_fresh_processes(minilm_path, tmp_path) -> None:
    from flagembed import Embedder
    from flagembed.index import HybridSearcher

    corpus, other = _corpus(tmp_path / "corpus.jsonl"), tmp_path / "elsewhere"
    other.mkdir()
    build = _cli(["index", "build", "-m", "all-MiniLM-L6-v2", "--corpus", str(corpus), "--out", "idx",
                  "--device", "cpu", "--no-progress"], tmp_path)  # fmt: skip
    assert build.returncode == 0, build.stderr[-2000:]
    res = _cli(["search", str(tmp_path / "idx"), "gene cancer", "--json", "--device", "cpu"], other)
    assert res.returncode == 0, res.stderr[-2000:]
    ref = HybridSearcher.load(tmp_path / "idx", embedder=Embedder(minilm_path, device="cpu")).search("gene cancer")
    assert [h["id"] for h in json.loads(res.stdout)] == ref.ids[0]


@pytest.mark.slow
def test_relative_model_folder_then_search_from_another_cwd(tiny_bert, tmp_path) -> None:
    import shutil

    work, other = tmp_path / "work", tmp_path / "other"
    shutil.copytree(tiny_bert, work / "models" / "x")
    other.mkdir()
    corpus = _corpus(work / "corpus.jsonl")
    build = _cli(["index", "build", "-m", "models/x", "--corpus", str(corpus), "--out", "idx", "--device", "cpu"], work)
    assert build.returncode == 0, build.stderr[-2000:]
    res = _cli(["search", str(work / "idx"), "gene cancer", "--json", "-k", "2", "--device", "cpu"], other)
    assert res.returncode == 0, res.stderr[-2000:]
    assert len(json.loads(res.stdout)) == 2


def test_build_checks_the_destination_and_corpus_before_loading_the_model(tmp_path):
    """A model that does not exist: the destination / corpus error must come first."""
    from typer.testing import CliRunner

    from flagembed.cli import app

    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"_id": "1", "text": "a"}\n')
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "mine.txt").write_text("x")
    build = ["index", "build", "-m", "nope/nope", "--corpus"]
    res = CliRunner().invoke(app, [*build, str(corpus), "--output", str(foreign)])
    assert res.exit_code == 2 and "without manifest.json; refusing to overwrite it" in res.output
    res = CliRunner().invoke(app, [*build, str(corpus), "-o", "/proc/idx"])
    assert res.exit_code == 2 and "cannot write /proc/idx" in res.output
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "no id"}\n')
    res = CliRunner().invoke(app, [*build, str(bad), "-o", str(tmp_path / "i")])
    assert res.exit_code == 2 and "needs an '_id'" in res.output


def test_dense_plus_bm25_index_from_the_command_line(tiny_bert, tmp_path):
    from typer.testing import CliRunner

    from flagembed.cli import app

    corpus = tmp_path / "c.jsonl"
    rows = [("a", "BM25 is a ranking function."), ("b", "Dense retrieval embeds text."), ("c", "Pandas eat bamboo.")]
    corpus.write_text("".join(json.dumps({"_id": i, "title": "", "text": t}) + "\n" for i, t in rows))
    idx = tmp_path / "idx"
    res = CliRunner().invoke(app, ["index", "build", "-m", str(tiny_bert), "--corpus", str(corpus), "-o", str(idx),
                                   "--modes", "dense,bm25"])  # fmt: skip
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(app, ["search", str(idx), "pandas bamboo", "--modes", "bm25", "--json", "-k", "1"])
    assert res.exit_code == 0, res.output
    (hit,) = json.loads(res.output)
    assert hit["id"] == "c" and "bamboo" in json.dumps(hit)
    res = CliRunner().invoke(app, ["search", str(idx), "pandas bamboo", "--json"])
    assert res.exit_code == 0 and json.loads(res.output)[0]["id"] == "c"
