"""mix_models_with_data: weights equal softmax(-loss / T) of losses computed here independently."""

from __future__ import annotations

from pathlib import Path

import pytest
import tiny_merge
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from flagembed.merge import example_losses, loss_weights, mix_models_with_data
from flagembed.merge.losses import sample_groups

RETRIEVAL = [
    {"query": "what is the cell", "pos": ["cells protein gene"], "neg": ["water fire", "city country", "red blue"]},
    {"query": "hiv drug therapy", "pos": ["virus drug clinical"], "neg": ["dark light", "fast slow", "big small"]},
    {"query": "brain blood risk", "pos": ["human brain blood", "x"], "neg": ["the a an", "new old", "long short"]},
]
GENERATION = [
    {"input": "what is the cell", "output": "cells protein gene"},
    {"input": "hiv drug therapy for patients", "output": "virus drug"},
    {"input": "red blue green", "output": "water fire earth air light"},
]
T = 0.05  # a low temperature so that the weights differ visibly between the random models


@pytest.fixture(scope="module")
def families(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    root = tmp_path_factory.mktemp("families")
    fam = {t: tiny_merge.build_family(root, t) for t in ("encoder", "reranker", "decoder")}
    for i, path in enumerate(fam["encoder"]):
        tiny_merge.add_noise(path, i)
    return fam


def _softmax(losses: list[float], t: float) -> list[float]:
    return torch.softmax(-torch.tensor(losses, dtype=torch.float64) / t, 0).tolist()


def _encoder_losses(paths: list[Path], batch_size: int) -> list[float]:
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(paths[0]))
    out = []
    for path in paths:
        model = AutoModel.from_pretrained(str(path)).eval()

        def embed(texts: list[str], model=model) -> torch.Tensor:
            with torch.no_grad():
                h = model(**tok(texts, padding=True, truncation=True, return_tensors="pt")).last_hidden_state
            return F.normalize(h.select(1, 0), dim=-1)

        batch_losses = []
        for s in range(0, len(RETRIEVAL), batch_size):
            chunk = RETRIEVAL[s : s + batch_size]
            q = embed([e["query"] for e in chunk])
            p = embed([t for e in chunk for t in [e["pos"][0], *e["neg"]]])
            target = torch.arange(len(chunk)) * 4
            batch_losses.append(float(F.cross_entropy(q @ p.T / 0.05, target)))
        out.append(sum(batch_losses) / len(batch_losses))
    return out


def test_encoder_weights_are_softmax_of_independent_losses(families, tmp_path):
    paths = families["encoder"]
    result = mix_models_with_data(paths, "encoder", RETRIEVAL, temperature=T, batch_size=2, neg_number=3,
                                  output_path=tmp_path / "m")  # fmt: skip
    want = _encoder_losses(paths, batch_size=2)
    assert result.losses == pytest.approx(want, abs=1e-5)
    assert min(abs(a - b) for i, a in enumerate(want) for b in want[i + 1 :]) > 5e-5  # tells the models apart
    assert result.weights == pytest.approx(_softmax(want, T), rel=1e-4)
    # and the folder holds the weighted sum with those weights
    merged = load_file(str(tmp_path / "m" / "model.safetensors"))
    ins = [load_file(str(p / "model.safetensors")) for p in paths]
    k = "encoder.layer.1.output.dense.weight"
    want_k = sum(w * s[k].double() for w, s in zip(result.weights, ins))
    torch.testing.assert_close(merged[k].double(), want_k, rtol=0, atol=1e-6)


def test_reranker_weights_are_softmax_of_group_cross_entropy(families, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    paths = families["reranker"]
    tok = AutoTokenizer.from_pretrained(str(paths[0]))
    want = []
    for path in paths:
        model = AutoModelForSequenceClassification.from_pretrained(str(path)).eval()
        qs = [e["query"] for e in RETRIEVAL for _ in range(4)]
        ps = [t for e in RETRIEVAL for t in [e["pos"][0], *e["neg"]]]
        with torch.no_grad():
            logits = model(**tok(qs, ps, padding=True, truncation=True, return_tensors="pt")).logits
        want.append(float(F.cross_entropy(logits.view(3, 4), torch.zeros(3, dtype=torch.long))))
    result = mix_models_with_data(
        paths, "reranker", RETRIEVAL, temperature=T, neg_number=3, output_path=tmp_path / "m", return_model=False
    )
    assert result.model is None
    assert result.losses == pytest.approx(want, rel=1e-5)
    assert result.weights == pytest.approx(_softmax(want, T), rel=1e-4)


def test_decoder_weights_are_softmax_of_output_token_loss(families):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    paths = families["decoder"]
    tok = AutoTokenizer.from_pretrained(str(paths[0]))
    want = []
    for path in paths:
        model = AutoModelForCausalLM.from_pretrained(str(path)).eval()
        per_example = []
        for e in GENERATION:  # one at a time, no padding: HF's own loss over the output tokens
            ids = tok.encode(e["input"] + " " + e["output"]) + [tok.eos_token_id]
            n_prompt = len(tok.encode(e["input"]))
            labels = [-100] * n_prompt + ids[n_prompt:]
            with torch.no_grad():
                out = model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels]))
            per_example.append(float(out.loss))
        want.append(sum(per_example) / len(per_example))
    model = mix_models_with_data(paths, "decoder", GENERATION, temperature=T, batch_size=2).model
    losses = example_losses(paths, "decoder", GENERATION, batch_size=3)
    assert losses == pytest.approx(want, rel=1e-5)
    assert loss_weights(losses, T) == pytest.approx(_softmax(want, T), rel=1e-4)
    assert type(model).__name__ == "Qwen2ForCausalLM"


def test_negatives_are_sampled_once_and_repeated_when_short():
    groups = sample_groups(RETRIEVAL, 5, seed=3)
    for ex, grp in zip(RETRIEVAL, groups):
        assert len(grp) == 6 and grp[0] == ex["pos"][0] and set(grp[1:]) == set(ex["neg"])
    assert groups == sample_groups(RETRIEVAL, 5, seed=3)
    assert [g[:1] for g in sample_groups(RETRIEVAL, 0, seed=0)] == [[e["pos"][0]] for e in RETRIEVAL]


@pytest.mark.parametrize(
    ("model_type", "examples", "error", "match"),
    [
        ("encoder", [], ValueError, "example_data is empty"),
        ("decoder", [], ValueError, "example_data is empty"),
        ("encoder", [{"query": "q", "pos": []}], ValueError, "example 0: 'pos' is empty"),
        ("encoder", [RETRIEVAL[0], {"query": "q", "pos": ["p"], "neg": []}], ValueError, "example 1: 'neg' is empty"),
        ("reranker", [{"query": 3, "pos": ["p"], "neg": ["n"]}], TypeError, "example 0: 'query' must be a string"),
        ("encoder", [{"query": "q", "pos": "p", "neg": ["n"]}], TypeError, "'pos' must be a list of strings"),
        ("decoder", [GENERATION[0], {"input": "x"}], TypeError, "example 1: 'output' must be a string, got None"),
        ("seq2seq", GENERATION, ValueError, "unknown model_type 'seq2seq'"),
    ],
)
def test_bad_examples_write_nothing(families, tmp_path, model_type, examples, error, match):
    paths = families["decoder" if model_type == "decoder" else "encoder"]
    with pytest.raises(error, match=match):
        mix_models_with_data(paths, model_type, examples, output_path=tmp_path / "m")
    assert not list(tmp_path.iterdir())


def test_bad_temperature_and_truncated_outputs(families, tmp_path):
    with pytest.raises(ValueError, match="temperature must be > 0, got 0"):
        mix_models_with_data(families["encoder"], "encoder", RETRIEVAL, temperature=0, output_path=tmp_path / "m")
    with pytest.raises(ValueError, match="example 0: no output token left .* max_input_length=4"):
        mix_models_with_data(families["decoder"], "decoder", GENERATION, max_input_length=4, output_path=tmp_path / "m")
    assert not list(tmp_path.iterdir())


def test_long_reranker_examples_are_capped_at_the_position_limit(families):
    long_text = " ".join(["cells protein gene blood virus"] * 80)  # 400 tokens; the rerankers have 128 positions
    examples = [{"query": long_text, "pos": [long_text], "neg": [long_text, "water"]}]
    losses = example_losses(families["reranker"][:2], "reranker", examples, neg_number=2)
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
