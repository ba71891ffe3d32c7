"""Exact equivalences of the beacon runtime with the plain HF model (LONG_CONTEXT.md §12 B-D)."""

from __future__ import annotations

import copy

import pytest
import torch
from beacon_tiny import KINDS, ids, tiny_lm

from flagembed.longctx.beacon import BeaconModel, BeaconSettings, beacon_state_dict, freeze_base, memory_formula

ATOL = 1e-4


def _beacon(plain, **kw):
    return BeaconModel(copy.deepcopy(plain), BeaconSettings(**kw)).eval()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_ratio_zero_equals_plain_loss_and_logits(kind, attn):
    plain = tiny_lm(kind, attn)
    x = ids(37)
    ref = plain(input_ids=x, labels=x)
    out = _beacon(plain, window=8, stride=8, ratio=(0,))(input_ids=x, labels=x)
    assert abs(float(out.loss.detach()) - float(ref.loss.detach())) < 1e-5
    torch.testing.assert_close(out.logits, ref.logits[:, 32:], atol=ATOL, rtol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_append_within_window_equals_plain(kind):
    plain = tiny_lm(kind)
    for n in (16, 11):  # a full window (beacons appended) and a partial one
        x = ids(n)
        out = _beacon(plain, window=16, stride=16, ratio=(4,), pos="append")(input_ids=x)
        torch.testing.assert_close(out.logits, plain(input_ids=x).logits, atol=ATOL, rtol=0)


def test_interleave_short_inputs():
    plain = tiny_lm("llama")
    x = ids(3)
    out = _beacon(plain, window=16, stride=16, ratio=(4,))(input_ids=x)
    torch.testing.assert_close(out.logits, plain(input_ids=x).logits, atol=ATOL, rtol=0)
    x = ids(9)  # r <= N < W: beacons inside the partial window change the logits (a silent skip would not)
    out = _beacon(plain, window=16, stride=16, ratio=(4,))(input_ids=x)
    assert (out.logits - plain(input_ids=x).logits).abs().max() > 1e-3


@pytest.mark.parametrize("kind", KINDS)
def test_default_beacon_equals_plain_with_eos_at_slots(kind):
    plain = tiny_lm(kind)
    x = ids(37)
    out = _beacon(plain, window=64, stride=64, ratio=(4,))(input_ids=x)
    with_eos, raw_pos = [], []
    for i, t in enumerate(x[0].tolist()):
        raw_pos.append(len(with_eos))
        with_eos.append(t)
        if (i + 1) % 4 == 0:
            with_eos.append(plain.config.eos_token_id)
    ref = plain(input_ids=torch.tensor([with_eos])).logits[:, raw_pos]
    torch.testing.assert_close(out.logits, ref, atol=ATOL, rtol=0)


def test_memory_sizes_follow_the_formula():
    plain = tiny_lm("llama")
    model = _beacon(plain, window=8, stride=8, ratio=(4,))
    x = ids(42)
    model(input_ids=x[:, :37])
    assert all(model.memory.sizes(i) == (0, 8, 6) for i in range(2))
    assert model.memory.sizes() == memory_formula(37, model.settings, 4)
    model(input_ids=x[:, 37:], reset=False)
    assert model.memory.sizes() == (0, 10, 2) == model.session.planner.sizes()
    k = model.memory.past(0)[0]
    assert k.shape == (1, 2, 12, 16)


def test_reset_makes_calls_identical():
    model = _beacon(tiny_lm("llama"), window=8, stride=8, ratio=(2, 4), ratio_mix="step-random")
    x = ids(30)
    a = model(input_ids=x, reset=False).logits[:, -1]
    b = model(input_ids=x, reset=False).logits[:, -1]  # continues the sequence: stale memory
    assert (a - b).abs().max() > 1e-3
    model.reset()
    c = model(input_ids=x, reset=False).logits[:, -1]
    torch.testing.assert_close(a, c, atol=0, rtol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_greedy_ratio_zero_equals_hf_generate(kind):
    plain = tiny_lm(kind)
    x = ids(13)
    ref = plain.generate(input_ids=x, max_new_tokens=12, do_sample=False, eos_token_id=None, pad_token_id=0)
    got = _beacon(plain, window=8, stride=8, ratio=(0,)).generate(input_ids=x, max_new_tokens=12, eos_token_id=[])
    assert got.tolist() == ref.tolist()


def test_generation_across_window_boundary_matches_manual_loop():
    plain = tiny_lm("llama")
    model = _beacon(plain, window=8, stride=8, ratio=(4,))
    x = ids(20)
    got = model.generate(input_ids=x, max_new_tokens=6, eos_token_id=[])
    session = model.session
    session.reset()
    logits = session.feed(x, logits="last").logits
    seq, sizes = [], []
    for _ in range(6):
        t = logits[:, -1].argmax(-1, keepdim=True)
        seq.append(int(t))
        logits = session.feed(t, logits="last").logits
        sizes.append(model.memory.sizes())
    assert got[0, 20:].tolist() == seq
    assert sizes[3] == (0, 6, 0)  # t23 completes the window: its beacons move to memory, raw = 0 (the cliff)
    assert sizes[:3] == [(0, 4, 6), (0, 4, 7), (0, 4, 8)]


def test_stop_list_and_sampling():
    model = _beacon(tiny_lm("llama"), window=8, stride=8, ratio=(4,))
    x = ids(10)
    greedy = model.generate(input_ids=x, max_new_tokens=8, eos_token_id=[])
    first = int(greedy[0, 10])
    stopped = model.generate(input_ids=x, max_new_tokens=8, eos_token_id=[], stop_token_ids=[first])
    assert stopped.shape[1] == 11 and int(stopped[0, -1]) == first
    g1, g2 = (torch.Generator().manual_seed(7) for _ in range(2))
    s1 = model.generate(input_ids=x, max_new_tokens=8, do_sample=True, temperature=0.7, top_p=0.9, generator=g1)
    s2 = model.generate(input_ids=x, max_new_tokens=8, do_sample=True, temperature=0.7, top_p=0.9, generator=g2)
    assert s1.tolist() == s2.tolist()
    with pytest.raises(ValueError, match="temperature"):
        model.generate(input_ids=x, max_new_tokens=2, do_sample=True, temperature=0)


def test_only_beacon_params_get_grads_and_single_window_refused():
    model = BeaconModel(tiny_lm("llama"), BeaconSettings(window=8, stride=8, ratio=(4,)))
    assert freeze_base(model.model) == 16_448  # the traced count for this tiny config
    model.train()
    x = ids(30)
    model(input_ids=x, labels=x).loss.backward()
    for name, p in model.model.named_parameters():
        if "layers.1.self_attn.beacon_q_proj" in name:  # last layer: a beacon's query feeds nothing later
            assert p.grad is not None and p.grad.abs().sum() == 0, name
        elif "beacon_" in name:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None, name
    with pytest.raises(ValueError, match="fits one window"):
        model(input_ids=x[:, :8], labels=x[:, :8])


@pytest.mark.slow
def test_gradient_checkpointing_same_grads():
    x = ids(30)
    grads = []
    for ckpt in (False, True):
        model = BeaconModel(tiny_lm("llama"), BeaconSettings(window=8, stride=8, ratio=(4,))).train()
        freeze_base(model.model)
        model.session.gradient_checkpointing = ckpt
        model(input_ids=x, labels=x).loss.backward()
        grads.append(model.model.model.beacon_embed_tokens.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1], atol=1e-6, rtol=1e-5)


def test_step_expansion_mask_limits_what_beacons_see():
    model = _beacon(tiny_lm("llama"), window=8, stride=8, ratio=(4,), pos="append", attn="step-expansion")
    x = ids(8)
    model(input_ids=x)
    k1 = model.memory.past(1)[0].clone()
    y = x.clone()
    y[0, 5] = (y[0, 5] + 1) % 250 + 3  # a token only the second beacon sees
    model(input_ids=y)
    k2 = model.memory.past(1)[0]
    torch.testing.assert_close(k1[:, :, 0], k2[:, :, 0], atol=1e-6, rtol=0)
    assert (k1[:, :, 1] - k2[:, :, 1]).abs().max() > 1e-4


def test_append_stride_below_window_runs():
    """The reference crashes with NameError (§3.10.1); here memory keeps W - S raw entries."""
    model = _beacon(tiny_lm("llama"), window=8, stride=4, ratio=(2,), pos="append")
    model(input_ids=ids(21))
    assert model.memory.sizes() == model.session.planner.sizes() == (0, 8, 5)


def test_checkpoint_names_round_trip(tmp_path):
    from flagembed.longctx.beacon import load_beacon_model

    model = _beacon(tiny_lm("qwen2"), window=8, stride=8, ratio=(4,))
    with torch.no_grad():
        for name, p in model.model.named_parameters():
            if "beacon_" in name:
                p.add_(torch.randn_like(p) * 0.1)
    names = set(beacon_state_dict(model.model))
    assert "model.beacon_embed_tokens.weight" in names
    assert {"model.layers.1.self_attn.beacon_q_proj.bias", "model.layers.0.self_attn.beacon_v_proj.weight"} <= names
    assert not any("beacon_o_proj" in n for n in names)
    model.save_pretrained(tmp_path)
    import json

    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["beacon_window"] == 8 and cfg["beacon_ratio"] == [4] and cfg["beacon_param"] == ["q", "k", "v"]
    loaded = load_beacon_model(tmp_path)
    assert loaded.settings.window == 8 and loaded.settings.ratio == (4,)
    x = ids(30)
    torch.testing.assert_close(loaded(input_ids=x).logits, model(input_ids=x).logits, atol=1e-5, rtol=0)
    fresh = load_beacon_model(tmp_path, ratio=(2,), param=("q", "k", "v", "o"))  # o missing: copied from o_proj
    attn = fresh.model.model.layers[0].self_attn
    torch.testing.assert_close(attn.beacon_o_proj.weight, attn.o_proj.weight)


def test_memory_reset_resets_the_whole_sequence_and_harness_calls_work():
    from flagembed.longctx.harness.runner import generate_text, reset_memory, sequence_loss

    model = _beacon(tiny_lm("llama"), window=8, stride=8, ratio=(4,))
    x = ids(30)
    a = model(input_ids=x, reset=False).logits[:, -1]
    model.memory.reset()  # what the harness calls between examples
    assert model.session.length == 0 and model.session.planner.total == 0
    torch.testing.assert_close(model(input_ids=x, reset=False).logits[:, -1], a, atol=0, rtol=0)
    reset_memory(model)
    loss, count = sequence_loss(model, x[0].tolist(), x[0].tolist())
    assert count == 29 and loss == pytest.approx(float(model(input_ids=x, labels=x).loss), abs=1e-6)

    class Tok:
        def decode(self, toks, skip_special_tokens=True):
            return " ".join(map(str, toks))

    text = generate_text(model, Tok(), x[0].tolist(), 3)
    assert text == " ".join(map(str, model.generate(input_ids=x, max_new_tokens=3)[0, 30:].tolist()))
