"""Parity with the reference package ``LM_Cocktail`` run in the same test (skipped when it is absent)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import tiny_merge
import torch
from safetensors.torch import load_file

from flagembed.merge import mix_models, mix_models_by_layers, mix_models_with_data

lmc = pytest.importorskip("LM_Cocktail", reason="LM-Cocktail is not installed")

WEIGHTS = [0.6, 0.25, 0.15]
RETRIEVAL = [
    {"query": "what is the cell", "pos": ["cells protein gene"], "neg": ["water fire", "city country", "red blue"]},
    {"query": "hiv drug therapy", "pos": ["virus drug clinical"], "neg": ["dark light", "fast slow", "big small"]},
    {"query": "brain blood risk", "pos": ["human brain blood"], "neg": ["the a an", "new old", "long short"]},
]
GENERATION = [
    {"input": "what is the cell", "output": "cells protein gene"},
    {"input": "hiv drug therapy for patients", "output": "virus drug"},
]


@pytest.fixture(scope="module")
def families(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    root = tmp_path_factory.mktemp("families")
    fam = {t: tiny_merge.build_family(root, t) for t in ("encoder", "reranker", "decoder")}
    for i, path in enumerate(fam["encoder"]):
        tiny_merge.add_noise(path, i)
    return fam


def _assert_same_state(ours: Path, ref_model: torch.nn.Module) -> None:
    got = load_file(str(ours / "model.safetensors"))
    ref = ref_model.state_dict()
    for k, v in got.items():
        assert torch.equal(v, ref[k]), k


@pytest.mark.parametrize("model_type", ["encoder", "reranker", "decoder"])
def test_mix_models_matches_reference_bit_for_bit(families, tmp_path, model_type):
    paths = [str(p) for p in families[model_type]]
    ref = lmc.mix_models(paths, model_type, WEIGHTS)
    mix_models(paths, model_type, WEIGHTS, tmp_path / "ours", return_model=False)
    _assert_same_state(tmp_path / "ours", ref)


@pytest.mark.parametrize("model_type", ["encoder", "decoder"])  # the reference's reranker branch is broken
def test_mix_models_by_layers_matches_reference(families, tmp_path, model_type, monkeypatch):
    import gc

    # the reference calls gc.collect() per tensor per model (minutes in a test process); results do not depend on it
    monkeypatch.setattr(gc, "collect", lambda *a: 0)
    paths = [str(p) for p in families[model_type]]
    try:
        ref = lmc.mix_models_by_layers(paths, model_type, WEIGHTS)
    except (TypeError, AttributeError, ValueError, KeyError) as exc:  # accelerate/transformers API drift
        pytest.skip(f"LM_Cocktail.mix_models_by_layers does not run with this transformers/accelerate: {exc}")
    mix_models_by_layers(paths, model_type, WEIGHTS, tmp_path / "ours", return_model=False)
    _assert_same_state(tmp_path / "ours", ref)


def test_encoder_data_weights_match_reference(families, tmp_path):
    paths = [str(p) for p in families["encoder"]]
    random.seed(0)  # the reference samples negatives with `random`; with neg_number == len(neg) only the order varies
    ref = lmc.mix_models_with_data(paths, "encoder", RETRIEVAL, temperature=0.05, batch_size=2, neg_number=3)
    ours = mix_models_with_data(paths, "encoder", RETRIEVAL, 0.05, 2, neg_number=3, output_path=tmp_path / "m")
    ref_state = ref.state_dict()
    ins = [load_file(str(Path(p) / "model.safetensors")) for p in paths]
    # recover the reference's weights from its merged tensors (it only prints them)
    k = "encoder.layer.0.attention.self.query.weight"
    a = torch.stack([s[k].flatten().double() for s in ins], 1)
    ref_w = torch.linalg.lstsq(a, ref_state[k].flatten().double().unsqueeze(1)).solution.flatten().tolist()
    assert ours.weights == pytest.approx(ref_w, abs=1e-4)
    assert max(ours.weights) - min(ours.weights) > 0.05


def test_decoder_data_weights_match_reference(families, tmp_path):
    """Our decoder loss is per example, batch-independent: equal to the reference's at batch_size=1."""
    paths = [str(p) for p in families["decoder"]]
    ref = lmc.mix_models_with_data(paths, "decoder", GENERATION, temperature=0.05, batch_size=1, max_input_length=32)
    ours = mix_models_with_data(paths, "decoder", GENERATION, 0.05, 2, 32, output_path=tmp_path / "m")
    ins = [load_file(str(Path(p) / "model.safetensors")) for p in paths]
    k = "model.layers.0.mlp.up_proj.weight"
    a = torch.stack([s[k].flatten().double() for s in ins], 1)
    ref_w = torch.linalg.lstsq(a, ref.state_dict()[k].flatten().double().unsqueeze(1)).solution.flatten().tolist()
    assert ours.weights == pytest.approx(ref_w, abs=1e-4)
