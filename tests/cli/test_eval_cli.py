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
    assert (out / "eval_results.md").read_text().startswith("# retrieval\n\n## ndcg_at_10")
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


def test_eval_retrieval_fused_reranker_and_bad_weight(tiny_bert, tmp_path):
    import tiny_models

    from flagembed.evaluate.report import load_results

    rr_path = tiny_models.build_bert(tmp_path / "tiny-rr", classifier=True)
    data_dir = write_beir(tmp_path / "toy")
    out = tmp_path / "out"
    base = ["eval", "retrieval", "-m", str(tiny_bert), "-d", str(data_dir), "-o", str(out), "--k-values", "1,3",
            "--rerank", str(rr_path), "--rerank-top-k", "3", "--device", "cpu"]  # fmt: skip
    bad = runner.invoke(app, [*base, "--rerank-weight", "1.5"])
    assert bad.exit_code == 2 and "rerank_weight must be in [0, 1]" in _error_line(bad)
    assert not out.exists()  # checked before anything is written or loaded
    res = runner.invoke(app, [*base, "--rerank-weight", "0.7"])
    assert res.exit_code == 0, res.output
    fused = [r for r in load_results(out) if r.reranker]
    assert len(fused) == 1 and fused[0].reranker.endswith("-fused-w0.7")
    assert fused[0].config["reranker"]["rerank_weight"] == 0.7


def test_eval_retrieval_bad_m3_weights_is_one_line_error(tiny_bert, tmp_path):
    data_dir = write_beir(tmp_path / "toy")
    out = tmp_path / "out"
    res = runner.invoke(app, ["eval", "retrieval", "-m", str(tiny_bert), "-d", str(data_dir), "-o", str(out),
                              "--modes", "hybrid", "--m3-weights", "0.4,x,0.4", "--device", "cpu"])  # fmt: skip
    assert "weights must be numbers" in _error_line(res) and not out.exists()


def _sts_folder(root, splits=(("train", 6), ("valid", 5), ("test", 4))):
    root.mkdir(parents=True)
    words = ["cat", "dog", "rain", "bread", "stock", "city", "window", "flour"]
    for split, n in splits:
        rows = "".join(f"{split} {words[i]}\ta {words[(i * 3) % 8]}\t{i % 5}\n" for i in range(n))
        (root / f"{split}.tsv").write_text("sentence1\tsentence2\tscore\n" + rows)
    return root


def _error_line(res, *, after_model_load=False):
    """The one ``error:`` line (after the weight-loading bar, which only the CliRunner shows, if a model loaded)."""
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert "Traceback" not in res.output and lines[-1].startswith("error: "), res.output
    assert len(lines) == 1 or (after_model_load and all(line.startswith("Loading weights") for line in lines[:-1]))
    return lines[-1]


def _sts(model, data, out, *extra):
    return runner.invoke(app, ["eval", "sts", "-m", str(model), "-d", str(data), "-o", str(out), "--device", "cpu",
                               *extra])  # fmt: skip


def test_eval_sts_reads_the_test_split_and_labels_it(tiny_bert, tmp_path):
    data = _sts_folder(tmp_path / "stsb")
    res = _sts(tiny_bert, data, tmp_path / "o")
    assert res.exit_code == 0, res.output
    (path,) = (tmp_path / "o").rglob("stsb-*.json")
    record = json.loads(path.read_text())
    assert path.name == "stsb-test.json" and record["split"] == "test" and record["stats"]["pairs"] == 4
    res = _sts(tiny_bert, data, tmp_path / "o", "--split", "train,valid")
    assert res.exit_code == 0, res.output
    assert json.loads((path.parent / "stsb-train+valid.json").read_text())["stats"]["pairs"] == 11
    line = _error_line(_sts(tiny_bert, data, tmp_path / "o", "--split", "dev"))
    assert "no split 'dev'; available: test, train, valid, all" in line


def test_eval_sts_prints_the_report_scale(tiny_bert, tmp_path):
    from flagembed.evaluate import display

    res = _sts(tiny_bert, _sts_folder(tmp_path / "stsb"), tmp_path / "o")
    assert res.exit_code == 0, res.output
    record = json.loads(next((tmp_path / "o").rglob("stsb-test.json")).read_text())
    rho = display(record["metrics"]["cosine_spearman"])  # ×100, as in eval_results.md and the README
    row = next(line for line in res.output.splitlines() if line.startswith("stsb"))
    assert row.split()[:4] == ["stsb", "test", "4", rho]
    assert f"| {rho} |" in (tmp_path / "o" / "eval_results.md").read_text()


def test_eval_results_md_keeps_earlier_commands(tiny_bert, tmp_path):
    out = tmp_path / "o"
    assert _sts(tiny_bert, _sts_folder(tmp_path / "first"), out).exit_code == 0
    assert _sts(tiny_bert, _sts_folder(tmp_path / "second"), out).exit_code == 0
    data = write_beir(tmp_path / "toy")
    res = runner.invoke(app, ["eval", "retrieval", "-m", str(tiny_bert), "-d", str(data), "-o", str(out),
                              "--k-values", "1,3", "--device", "cpu"])  # fmt: skip
    assert res.exit_code == 0, res.output
    report = (out / "eval_results.md").read_text()
    assert "first-test" in report and "second-test" in report and "toy-test" in report


def test_result_folder_names_do_not_depend_on_how_the_model_is_typed(tiny_bert, tmp_path, monkeypatch):
    import shutil

    from flagembed.evaluate.jobs import model_label

    models = tmp_path / "models"
    shutil.copytree(tiny_bert, models / "tiny")
    data, out = _sts_folder(tmp_path / "stsb"), tmp_path / "o"
    monkeypatch.chdir(tmp_path)
    for typed in ("./models/tiny", "models/tiny/", str(models / "tiny")):
        assert _sts(typed, data, out).exit_code == 0
    assert len(list(out.rglob("stsb-test.json"))) == 1
    shutil.copytree(tiny_bert, tmp_path / "other" / "tiny")  # a different model with the same folder name
    assert _sts("other/tiny", data, out).exit_code == 0
    folders = sorted(p.parent.parent.name for p in out.rglob("stsb-test.json"))
    assert len(folders) == 2 and all(f.startswith("tiny-") for f in folders)
    assert model_label("all-MiniLM-L6-v2") == model_label("sentence-transformers/all-MiniLM-L6-v2")
    assert model_label("all-MiniLM-L6-v2") == "sentence-transformers/all-MiniLM-L6-v2"


def _retrieval(model, data, out, *extra):
    return runner.invoke(app, ["eval", "retrieval", "-m", str(model), "-d", str(data), "-o", str(out),
                               "--device", "cpu", *extra])  # fmt: skip


def test_eval_retrieval_table_follows_k_values(tiny_bert, tmp_path):
    from flagembed.evaluate import display

    out = tmp_path / "o"
    res = _retrieval(tiny_bert, write_beir(tmp_path / "toy"), out, "--k-values", "1,5")
    assert res.exit_code == 0, res.output
    lines = [line.split("\r")[-1].strip() for line in res.output.splitlines()]  # drop progress bars
    i = next(i for i, line in enumerate(lines) if line.startswith("dataset"))
    assert lines[i].split() == ["dataset", "mode", "reranker", "ndcg_at_5", "mrr_at_5", "recall_at_5"]
    record = json.loads(next(out.rglob("toy-test.json")).read_text())
    assert record["main_score"] == "ndcg_at_5"
    assert lines[i + 2].split()[:4] == ["toy-test", "dense", "-", display(record["metrics"]["ndcg_at_5"])]


def test_eval_arguments_are_checked_before_the_model_loads(tmp_path):
    data, out, missing_model = write_beir(tmp_path / "toy"), tmp_path / "o", tmp_path / "no-such-model"
    line = _error_line(_retrieval(missing_model, data, out, "--search-top-k", "5", "--k-values", "1,10,100"))
    assert "k = 100 exceeds search_top_k = 5" in line
    line = _error_line(_retrieval(missing_model, data, out, "--modes", "dense,foo"))
    assert "'foo' is unknown; valid: dense, sparse, colbert, hybrid" in line
    line = _error_line(_retrieval(missing_model, data, out, "--k-values", "1,ten"))
    assert "--k-values: 'ten' is not an integer" in line
    line = _error_line(_retrieval(missing_model, tmp_path / "nowhere", out))
    assert "nowhere: no such folder" in line
    line = _error_line(_sts(missing_model, tmp_path / "nowhere", out))
    assert "nowhere: no such file or folder" in line
    assert not out.exists()


def test_eval_bad_encoding_names_file_and_line(tmp_path):
    data, missing_model = write_beir(tmp_path / "toy"), tmp_path / "no-such-model"
    qrels = data / "qrels" / "test.tsv"
    qrels.write_bytes(qrels.read_bytes() + b"q1\td\xff\t1\n")
    line = _error_line(_retrieval(missing_model, data, tmp_path / "o"))
    assert "test.tsv:8: not valid UTF-8" in line
    (tmp_path / "pairs.tsv").write_bytes(b"sentence1\tsentence2\tscore\na\t\xe9\t1\n")
    assert "pairs.tsv:2: not valid UTF-8" in _error_line(_sts(missing_model, tmp_path / "pairs.tsv", tmp_path / "o"))
    (tmp_path / "odd" / "test.tsv").mkdir(parents=True)  # unreadable as a file (an OSError, not a traceback)
    assert "odd/test.tsv" in _error_line(_sts(missing_model, tmp_path / "odd", tmp_path / "o"))


def test_eval_mteb_unknown_task_and_offline(tiny_bert, tmp_path, monkeypatch):
    mteb = pytest.importorskip("mteb")
    args = ["eval", "mteb", "-m", str(tmp_path / "no-such-model"), "--tasks", "STSBenchmrk", "--device", "cpu"]
    assert "unknown mteb task: 'STSBenchmrk' not found" in _error_line(runner.invoke(app, args))

    def offline(*args, **kwargs):  # what datasets raises when HF_HUB_OFFLINE is set and nothing is cached
        raise ConnectionError("Couldn't reach 'mteb/stsbenchmark-sts' on the Hub (OfflineModeIsEnabled)")

    monkeypatch.setattr(mteb, "evaluate", offline)
    res = runner.invoke(app, ["eval", "mteb", "-m", str(tiny_bert), "--tasks", "STSBenchmark", "--device", "cpu"])
    assert "mteb could not fetch a dataset" in _error_line(res, after_model_load=True)


def test_rerank_option_has_the_serve_spelling_too():
    """``--reranker`` (as on ``flagembed serve``) and ``--rerank`` name the same option."""
    from typer.main import get_command

    from flagembed.cli import app

    retrieval = get_command(app).commands["eval"].commands["retrieval"]  # type: ignore[attr-defined]
    opts = {o for p in retrieval.params for o in p.opts if p.name == "rerank"}
    assert opts == {"--rerank", "--reranker"}


def test_eval_retrieval_cache_dir_shares_m3_indexes_across_outputs(tmp_path):
    """``--cache-dir``: a second evaluation (other output, other weights) loads the first one's M3 indexes."""
    from tiny_m3 import build_m3

    from flagembed.evaluate.report import load_results

    model = build_m3(tmp_path / "m3")
    data_dir = write_beir(tmp_path / "toy")
    cache = tmp_path / "shared-cache"
    base = ["eval", "retrieval", "-m", str(model), "-d", str(data_dir), "--k-values", "1,3", "--modes",
            "dense,hybrid", "--cache-dir", str(cache), "--device", "cpu"]  # fmt: skip
    first = runner.invoke(app, [*base, "-o", str(tmp_path / "a")])
    assert first.exit_code == 0, first.output
    folders = sorted(p.name for p in cache.iterdir() if p.is_dir())
    assert len(folders) == 1 and not (tmp_path / "a" / "embedding_cache").exists()
    second = runner.invoke(app, [*base, "-o", str(tmp_path / "b"), "--m3-weights", "1,0,1"])
    assert second.exit_code == 0, second.output
    results = {r.mode: r for r in load_results(tmp_path / "b")}
    assert results["hybrid"].stats["cache_hits"] == 1 and results["hybrid"].config["eval"]["m3_weights"]["sparse"] == 0
    assert sorted(p.name for p in cache.iterdir() if p.is_dir()) == folders
    dense_a = {r.mode: r for r in load_results(tmp_path / "a")}["dense"]
    assert results["dense"].search_results == dense_a.search_results
