"""A checkpoint's own Python code (``auto_map`` in config.json) runs only with the user's consent.

Each crafted folder holds a tiny model whose ``config.json`` points ``auto_map`` at ``remote_code.py`` in the
folder; importing that file writes a marker. The folders are named like registry rows that need remote code
(``gte-base-en-v1.5``, ``bge-reranker-v2-minicpm-layerwise``, ...), which used to switch the code on by name.
Every public loader and every model-loading CLI command must leave the marker absent unless consent is
given; with consent the marker appears, which shows each check can fail.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import tiny_models
import tiny_rerankers
from tiny_m3 import build_m3
from typer.testing import CliRunner

import flagembed
from flagembed.cli import app

# model_type -> (config class, base model class, classification or causal-LM class)
_FAMILIES = {
    "bert": ("BertConfig", "BertModel", "BertForSequenceClassification"),
    "xlm-roberta": ("XLMRobertaConfig", "XLMRobertaModel", "XLMRobertaForSequenceClassification"),
    "gemma2": ("Gemma2Config", "Gemma2Model", "Gemma2ForCausalLM"),
}

_REMOTE_PY = """\
import pathlib

pathlib.Path({marker!r}).write_text("remote code ran")

from transformers import {cfg}, {base}, {head}


class RemoteConfig({cfg}):
    pass


class RemoteModel({base}):
    config_class = RemoteConfig


class RemoteHead({head}):
    config_class = RemoteConfig
"""


def plant_code(folder: Path, marker: Path) -> Path:
    """Point ``folder/config.json``'s ``auto_map`` at a ``remote_code.py`` that writes ``marker`` on import."""
    cfg = json.loads((folder / "config.json").read_text())
    names = _FAMILIES[cfg["model_type"]]
    (folder / "remote_code.py").write_text(
        _REMOTE_PY.format(marker=str(marker), cfg=names[0], base=names[1], head=names[2])
    )
    head_auto = "AutoModelForCausalLM" if names[2].endswith("CausalLM") else "AutoModelForSequenceClassification"
    cfg["auto_map"] = {
        "AutoConfig": "remote_code.RemoteConfig",
        "AutoModel": "remote_code.RemoteModel",
        head_auto: "remote_code.RemoteHead",
    }
    (folder / "config.json").write_text(json.dumps(cfg))
    return folder


def crafted(src: Path, tmp: Path, name: str, checkpoint: bool = False) -> tuple[Path, Path]:
    """A copy of ``src`` named ``name`` (or its ``checkpoint-5``) with planted code; returns (folder, marker)."""
    marker = tmp / "marker.txt"
    folder = tmp / name / "checkpoint-5" if checkpoint else tmp / name
    shutil.copytree(src, folder)
    return plant_code(folder, marker), marker


# ---------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("remote-src")
    return {
        "embedder": tiny_models.build_bert(tmp / "bert"),
        "m3": build_m3(tmp / "m3"),
        "cross": tiny_models.build_bert(tmp / "cross", seed=3, classifier=True),
        "decoder": tiny_rerankers.build_decoder_lm(tmp / "decoder", "gemma2", layers=3, heads=True),
    }


def _embedders() -> list[tuple[str, str, str, Callable[..., Any]]]:
    fl = flagembed
    return [
        ("Embedder", "embedder", "gte-base-en-v1.5", lambda p, **kw: fl.Embedder(p, device="cpu", **kw)),
        ("FlagModel", "embedder", "gte-large-en-v1.5", lambda p, **kw: fl.FlagModel(p, devices="cpu", **kw)),
        ("FlagAutoModel", "embedder", "gte-base-en-v1.5",
         lambda p, **kw: fl.FlagAutoModel.from_finetuned(p, devices="cpu", **kw)),
        ("M3Embedder", "m3", "gte-multilingual-base", lambda p, **kw: fl.M3Embedder(p, device="cpu", **kw)),
        ("BGEM3FlagModel", "m3", "gte-multilingual-base", lambda p, **kw: fl.BGEM3FlagModel(p, devices="cpu", **kw)),
        ("FlagAutoModel-m3", "m3", "gte-multilingual-base",
         lambda p, **kw: fl.FlagAutoModel.from_finetuned(p, model_class="encoder-only-m3", devices="cpu", **kw)),
        ("Reranker", "cross", "gte-base-en-v1.5", lambda p, **kw: fl.Reranker(p, device="cpu", **kw)),
        ("FlagReranker", "cross", "gte-large-en-v1.5", lambda p, **kw: fl.FlagReranker(p, devices="cpu", **kw)),
        ("FlagAutoReranker-ce", "cross", "gte-base-en-v1.5",
         lambda p, **kw: fl.FlagAutoReranker.from_finetuned(p, model_class="encoder-only-base", devices="cpu", **kw)),
        ("LLMReranker", "decoder", "bge-reranker-v2-minicpm-layerwise",
         lambda p, **kw: fl.LLMReranker(p, device="cpu", **kw)),
        ("FlagLLMReranker", "decoder", "bge-reranker-v2-minicpm-layerwise",
         lambda p, **kw: fl.FlagLLMReranker(p, devices="cpu", **kw)),
        ("LayerwiseReranker", "decoder", "bge-reranker-v2-minicpm-layerwise",
         lambda p, **kw: fl.LayerwiseReranker(p, device="cpu", **kw)),
        ("LayerWiseFlagLLMReranker", "decoder", "bge-reranker-v2-minicpm-layerwise",
         lambda p, **kw: fl.LayerWiseFlagLLMReranker(p, devices="cpu", **kw)),
        ("LightweightReranker", "decoder", "bge-reranker-v2.5-gemma2-lightweight",
         lambda p, **kw: fl.LightweightReranker(p, device="cpu", **kw)),
        ("LightWeightFlagLLMReranker", "decoder", "bge-reranker-v2.5-gemma2-lightweight",
         lambda p, **kw: fl.LightWeightFlagLLMReranker(p, devices="cpu", **kw)),
        ("FlagAutoReranker", "decoder", "bge-reranker-v2-minicpm-layerwise",
         lambda p, **kw: fl.FlagAutoReranker.from_finetuned(p, devices="cpu", **kw)),
    ]  # fmt: skip


LOADERS = _embedders()


@pytest.mark.parametrize("checkpoint", [False, True], ids=["folder", "checkpoint-5"])
@pytest.mark.parametrize(("label", "source", "name", "load"), LOADERS, ids=[row[0] for row in LOADERS])
def test_loader_runs_folder_code_only_with_consent(sources, tmp_path, label, source, name, load, checkpoint):
    folder, marker = crafted(sources[source], tmp_path / "a", name, checkpoint)
    model = load(str(folder))
    assert not marker.exists(), f"{label} ran the folder's own code without consent"
    assert model is not None
    folder, marker = crafted(sources[source], tmp_path / "b", name, checkpoint)
    load(str(folder), trust_remote_code=True)
    assert marker.exists(), f"{label} did not run the folder's code although consent was given"


def test_explicit_refusal_keeps_code_off(sources, tmp_path):
    folder, marker = crafted(sources["embedder"], tmp_path, "gte-base-en-v1.5")
    flagembed.Embedder(str(folder), device="cpu", trust_remote_code=False)
    flagembed.FlagAutoModel.from_finetuned(str(folder), devices="cpu", trust_remote_code=False)
    assert not marker.exists()


def test_embeddings_without_consent_use_the_builtin_model(sources, tmp_path):
    import numpy as np

    folder, marker = crafted(sources["embedder"], tmp_path, "gte-base-en-v1.5")
    got = flagembed.Embedder(str(folder), device="cpu").encode(["blue water"])
    want = flagembed.Embedder(str(sources["embedder"]), device="cpu").encode(["blue water"])
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------- CLI
runner = CliRunner()


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _docs(tmp: Path) -> Path:
    return _write(tmp / "docs.txt", "the cell is small\nhiv drug therapy\nwater and fire\n")


def _corpus(tmp: Path) -> Path:
    rows = [{"_id": f"d{i}", "title": "", "text": t} for i, t in enumerate(["cell gene", "hiv drug", "fire water"])]
    return _write(tmp / "corpus.jsonl", "".join(json.dumps(r) + "\n" for r in rows))


def _train(tmp: Path) -> Path:
    rows = [
        {"query": "cell", "pos": ["the cell is small"], "neg": ["fire water", "city"]},
        {"query": "hiv", "pos": ["hiv drug therapy"], "neg": ["a cat", "bread"]},
        {"query": "rain", "pos": ["it rains"], "neg": ["stocks", "dogs"]},
    ]
    return _write(tmp / "train.jsonl", "".join(json.dumps(r) + "\n" for r in rows))


def _pairs(tmp: Path) -> Path:
    rows = [("a cat", "the cat", 4.0), ("a dog barks", "stocks", 1.0), ("rain falls", "it rains", 3.5)]
    return _write(tmp / "pairs.tsv", "sentence1\tsentence2\tscore\n" + "".join(f"{a}\t{b}\t{s}\n" for a, b, s in rows))


def _cli_embed(model: Path, tmp: Path) -> list[str]:
    return ["embed", "-m", str(model), "-i", str(_docs(tmp)), "-o", str(tmp / "v.npy"), "--device", "cpu"]


def _cli_rerank(model: Path, tmp: Path) -> list[str]:
    return ["rerank", "-m", str(model), "-q", "hiv", "--docs", str(_docs(tmp)), "--device", "cpu"]


def _cli_index(model: Path, tmp: Path) -> list[str]:
    pytest.importorskip("faiss")
    return ["index", "build", "-m", str(model), "--corpus", str(_corpus(tmp)), "-o", str(tmp / "idx"),
            "--device", "cpu", "--no-progress"]  # fmt: skip


def _cli_eval(model: Path, tmp: Path) -> list[str]:
    return ["eval", "sts", "-m", str(model), "-d", str(_pairs(tmp)), "-o", str(tmp / "o"), "--device", "cpu"]


def _cli_mine(model: Path, tmp: Path) -> list[str]:
    return ["mine", "-m", str(model), "-i", str(_train(tmp)), "-o", str(tmp / "mined.jsonl"),
            "--range-for-sampling", "0-5", "--negative-number", "1", "--device", "cpu"]  # fmt: skip


def _cli_score(model: Path, tmp: Path) -> list[str]:
    return ["score", "-r", str(model), "-i", str(_train(tmp)), "-o", str(tmp / "scored.jsonl"), "--device", "cpu"]


def _cli_export(model: Path, tmp: Path) -> list[str]:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    return ["export", "-m", str(model), "--out", str(tmp / "onnx")]


CLI = [
    ("embed", "embedder", "gte-base-en-v1.5", _cli_embed),
    ("rerank", "cross", "gte-base-en-v1.5", _cli_rerank),
    ("index-build", "m3", "gte-multilingual-base", _cli_index),
    ("eval-sts", "embedder", "gte-large-en-v1.5", _cli_eval),
    ("mine", "embedder", "gte-base-en-v1.5", _cli_mine),
    ("score", "cross", "gte-base-en-v1.5", _cli_score),
    pytest.param("export", "embedder", "gte-base-en-v1.5", _cli_export, marks=pytest.mark.slow, id="export"),
]


@pytest.mark.parametrize(("label", "source", "name", "args"), CLI, ids=[row[0] for row in CLI[:-1]] + ["export"])
def test_cli_runs_folder_code_only_with_flag(sources, tmp_path, label, source, name, args):
    folder, marker = crafted(sources[source], tmp_path / "a", name)
    res = runner.invoke(app, args(folder, tmp_path / "a"))
    assert res.exit_code == 0, res.output
    assert not marker.exists(), f"flagembed {label} ran the folder's own code without --trust-remote-code"
    folder, marker = crafted(sources[source], tmp_path / "b", name)
    res = runner.invoke(app, [*args(folder, tmp_path / "b"), "--trust-remote-code"])
    assert marker.exists(), f"flagembed {label} did not run the folder's code with --trust-remote-code: {res.output}"


def test_cli_serve_runs_folder_code_only_with_flag(sources, tmp_path, monkeypatch):
    pytest.importorskip("fastapi")
    started = []

    class NoServer:
        def run(self) -> None:
            started.append(True)

    monkeypatch.setattr("flagembed.serve.server.make_server", lambda app, host, port, *a, **kw: NoServer())
    for sub, consent in (("a", []), ("b", ["--trust-remote-code"])):
        model, marker = crafted(sources["embedder"], tmp_path / sub, "gte-base-en-v1.5")
        ranker, ranker_marker = crafted(sources["cross"], tmp_path / sub / "r", "gte-large-en-v1.5")
        res = runner.invoke(app, ["serve", "-m", str(model), "-r", str(ranker), "--device", "cpu", *consent])
        assert res.exit_code == 0, res.output
        assert marker.exists() == ranker_marker.exists() == bool(consent), (sub, res.output)
    assert started == [True, True]


def test_cli_registered_model_needing_code_says_how_to_consent(monkeypatch, tmp_path):
    def boom(*a: Any, **k: Any) -> None:
        raise AssertionError("the hub was contacted")

    monkeypatch.setattr("huggingface_hub.snapshot_download", boom)
    docs = _docs(tmp_path)
    res = runner.invoke(
        app, ["embed", "-m", "Alibaba-NLP/gte-base-en-v1.5", "-i", str(docs), "-o", str(tmp_path / "v")]
    )
    assert res.exit_code == 2
    assert "needs to run its own Python code" in res.output and "--trust-remote-code" in res.output
    res = runner.invoke(app, ["rerank", "-m", "BAAI/bge-reranker-v2-minicpm-layerwise", "-q", "x", "--docs", str(docs)])
    assert res.exit_code == 2 and "--trust-remote-code" in res.output


def test_every_model_loading_command_has_the_flag():
    for cmd in (["embed"], ["rerank"], ["serve"], ["index", "build"], ["eval", "retrieval"], ["eval", "sts"],
                ["eval", "mteb"], ["mine"], ["score"], ["export"], ["merge"], ["finetune", "embedder"]):  # fmt: skip
        res = runner.invoke(app, [*cmd, "--help"], env={"COLUMNS": "200"})
        assert "--trust-remote-code" in res.output, cmd


def test_interrupted_finetune_folder_is_reported_by_loaders_and_cli(sources, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(sources["embedder"], run / "checkpoint-3")
    shutil.copytree(sources["embedder"], run / "checkpoint-12")
    (run / "trainer_state.json").write_text("{}")
    for load in (flagembed.Embedder, flagembed.Reranker, flagembed.LLMReranker, flagembed.M3Embedder):
        with pytest.raises(FileNotFoundError, match="no model in folder.*latest checkpoint is checkpoint-12"):
            load(str(run))
    res = runner.invoke(app, _cli_embed(run, tmp_path))
    assert res.exit_code == 2 and "latest checkpoint is checkpoint-12" in res.output
    empty = tmp_path / "empty"
    empty.mkdir()
    res = runner.invoke(app, _cli_embed(empty, tmp_path))
    assert res.exit_code == 2 and "is not a model folder (no config.json)" in res.output
