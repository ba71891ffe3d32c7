"""Layerwise and lightweight rerankers against straightforward computations on tiny decoders."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import tiny_rerankers
import torch
from safetensors import safe_open

from flagembed.inference.layerwise import LayerwiseReranker
from flagembed.inference.lightweight import LightweightReranker
from flagembed.inference.llm_reranker import LLMReranker
from flagembed.models.layer_runner import token_compress

PAIRS = [
    ("what is the cell", "the cell is a small protein in the human brain"),
    ("hiv drug", "clinical therapy for hiv patients with drug treatment and risk of cancer"),
    ("a", "b"),
    ("blood virus", "the virus was found in blood of a mouse"),
]
LAYERS = 4


@pytest.fixture(scope="module", params=["llama", "gemma2"])
def with_heads(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("lw") / request.param
    return tiny_rerankers.build_decoder_lm(folder, request.param, layers=LAYERS, heads=True)


def _load(path: Path) -> tuple:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path).eval()
    with safe_open(str(path / "layer_heads.safetensors"), framework="pt") as f:
        heads = {int(k.split(".")[0]): f.get_tensor(k) for k in f.keys()}
        scale = float(f.metadata()["scale"])
    return model, heads, scale


def _head(model: torch.nn.Module, heads: dict, scale: float, layer: int, normed_last: torch.Tensor) -> float:
    value = float(normed_last @ heads[layer][0] / scale)
    cap = getattr(model.config, "final_logit_softcapping", None)
    return math.tanh(value / cap) * cap if cap else value


def _manual_layerwise(path: Path, rr: LayerwiseReranker, layers: list[int]) -> list[list[float]]:
    """Full forward with all hidden states, one pair at a time; final norm + head at the last token."""
    model, heads, scale = _load(path)
    out: list[list[float]] = [[] for _ in layers]
    for seq in rr.tokenize_pairs(PAIRS).ids:
        with torch.no_grad():
            hs = model(input_ids=torch.tensor([seq]), output_hidden_states=True).hidden_states
            for j, k in enumerate(layers):
                state = hs[k] if k == LAYERS else model.model.norm(hs[k])  # the last entry is already normed
                out[j].append(_head(model, heads, scale, k, state[0, -1]))
    return out


def test_layerwise_scores_match_manual(with_heads: Path) -> None:
    rr = LayerwiseReranker(with_heads, device="cpu", batch_size=3)
    got = rr.compute_score(PAIRS, cutoff_layers=[4, 2])
    assert isinstance(got, list) and len(got) == 2 and len(got[0]) == len(PAIRS)
    np.testing.assert_allclose(got, _manual_layerwise(with_heads, rr, [2, 4]), rtol=1e-4, atol=1e-5)
    single = rr.compute_score(PAIRS, cutoff_layers=3)
    np.testing.assert_allclose(single, _manual_layerwise(with_heads, rr, [3])[0], rtol=1e-4, atol=1e-5)
    assert len(rr.compute_score(PAIRS[0], cutoff_layers=[2])) == 1


def test_early_exit_skips_layers_above_cutoff(with_heads: Path) -> None:
    rr = LayerwiseReranker(with_heads, device="cpu")
    calls = [0] * LAYERS
    layers = rr.model.get_decoder().layers
    for i, layer in enumerate(layers):
        layer.register_forward_hook(lambda *_a, i=i: calls.__setitem__(i, calls[i] + 1))
    rr.compute_score(PAIRS, cutoff_layers=[2], batch_size=2)
    assert calls == [2, 2, 0, 0]  # two batches; layers 3 and 4 never run
    assert len(rr.model.get_decoder().layers) == LAYERS  # the window was restored


def test_unavailable_cutoffs_are_dropped_or_rejected(with_heads: Path) -> None:
    rr = LayerwiseReranker(with_heads, device="cpu")
    assert rr.available_layers == [2, 3, 4]
    assert rr.resolve_cutoffs([1, 3]) == [3]
    assert rr.resolve_cutoffs(None) == [4]
    with pytest.raises(ValueError, match="no usable layer"):
        rr.resolve_cutoffs([1, 9])
    with pytest.raises(TypeError, match=r"cutoff_layers\[0\]"):
        rr.resolve_cutoffs(["2"])


def test_without_heads_file_the_last_layer_is_the_yes_logit(tmp_path: Path) -> None:
    path = tiny_rerankers.build_decoder_lm(tmp_path / "qwen2", "qwen2", layers=3)
    layerwise = LayerwiseReranker(path, device="cpu").compute_score(PAIRS)  # default cutoff: the last layer
    base = LLMReranker(path, device="cpu").compute_score(PAIRS)
    np.testing.assert_allclose(layerwise, base, rtol=1e-4, atol=1e-5)


def test_lightweight_ratio_one_equals_layerwise(with_heads: Path) -> None:
    lw = LayerwiseReranker(with_heads, device="cpu", prompt="is B relevant to A ?")
    lt = LightweightReranker(with_heads, device="cpu", prompt="is B relevant to A ?")
    want = lw.compute_score(PAIRS, cutoff_layers=[2, 4])
    np.testing.assert_allclose(lt.compute_score(PAIRS, cutoff_layers=[2, 4], compress_layers=[1]), want, rtol=1e-5)


def _compress_one(hidden: torch.Tensor, head: int, tail: int, ratio: int) -> torch.Tensor:
    """Python loop: keep head/tail rows, mean every ``ratio`` passage rows."""
    n = hidden.shape[0]
    passage = hidden[head : n - tail]
    chunks = [passage[i : i + ratio].mean(0) for i in range(0, len(passage), ratio)]
    return torch.cat([hidden[:head], torch.stack(chunks) if chunks else passage, hidden[n - tail :]])


def test_token_compress_matches_loop() -> None:
    gen = torch.Generator().manual_seed(0)
    lengths, heads, tails = [11, 7, 9], [3, 2, 4], [2, 2, 1]
    hidden = torch.randn(3, 11, 5, generator=gen)
    mask = (torch.arange(11)[None] < torch.tensor(lengths)[:, None]).long()
    new, new_mask = token_compress(hidden, mask, torch.tensor(heads), torch.tensor(tails), 3)
    for b in range(3):
        want = _compress_one(hidden[b, : lengths[b]], heads[b], tails[b], 3)
        assert int(new_mask[b].sum()) == len(want)
        torch.testing.assert_close(new[b, : len(want)], want)


def _manual_lightweight(path: Path, seq: list[int], head: int, tail: int, cut: int, top: int, ratio: int) -> float:
    """Run ``cut`` layers, compress by a loop, run layers cut..top in a separate model built from the weights."""
    from transformers import AutoConfig, AutoModelForCausalLM

    model, heads, scale = _load(path)
    with torch.no_grad():
        hs = model(input_ids=torch.tensor([seq]), output_hidden_states=True).hidden_states
        small = _compress_one(hs[cut][0], head, tail, ratio)
        cfg = AutoConfig.from_pretrained(path)
        cfg.num_hidden_layers = top - cut
        if hasattr(cfg, "layer_types"):
            cfg.layer_types = cfg.layer_types[cut:top]
        upper = AutoModelForCausalLM.from_config(cfg).eval()
        state = {}
        for key, value in model.state_dict().items():
            if ".layers." in key:
                idx = int(key.split(".layers.")[1].split(".")[0])
                if not cut <= idx < top:
                    continue
                key = key.replace(f".layers.{idx}.", f".layers.{idx - cut}.")
            state[key] = value
        upper.load_state_dict(state)
        # Gemma scales inputs_embeds by sqrt(hidden) in some transformers versions: undo whatever it does
        probe = torch.ones(1, 1, model.config.hidden_size)
        factor = float(upper.model(inputs_embeds=probe, output_hidden_states=True).hidden_states[0][0, 0, 0])
        last = upper.model(inputs_embeds=small[None] / factor).last_hidden_state[0, -1]
    return _head(model, heads, scale, top, last)


def test_lightweight_compression_matches_manual(with_heads: Path) -> None:
    rr = LightweightReranker(with_heads, device="cpu", compress_layers=[2], compress_ratio=2, batch_size=4)
    got = rr.compute_score(PAIRS, cutoff_layers=[4])
    tokens = rr.tokenize_pairs(PAIRS)
    want = [
        _manual_lightweight(with_heads, seq, int(h), int(t), cut=2, top=4, ratio=2)
        for seq, h, t in zip(tokens.ids, tokens.head_len, tokens.tail_len)
    ]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    # the cutoff at the compression layer itself sees the uncompressed state (as the reference)
    both = rr.compute_score(PAIRS, cutoff_layers=[2, 4])
    plain = LayerwiseReranker(with_heads, device="cpu", prompt=rr.prompt)
    np.testing.assert_allclose(both[0], plain.compute_score(PAIRS, cutoff_layers=[2]), rtol=1e-4)
    np.testing.assert_allclose(both[1], got, rtol=1e-5)


def test_lightweight_rejects_bad_ratio(with_heads: Path) -> None:
    with pytest.raises(ValueError, match="compress_ratio"):
        LightweightReranker(with_heads, device="cpu", compress_ratio=0)
