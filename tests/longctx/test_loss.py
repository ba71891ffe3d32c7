"""chunked_causal_lm_loss equals HF's full cross-entropy, in loss and in gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from flagembed.longctx import causal_lm_loss, chunked_causal_lm_loss


def _full(hidden, head, labels):
    logits = head(hidden)
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100)


def _case(seed=0, b=2, t=37, h=16, v=50):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(b, t, h, generator=g, dtype=torch.float64, requires_grad=True)
    head = torch.nn.Linear(h, v, bias=False).double()
    with torch.no_grad():
        head.weight.copy_(torch.randn(v, h, generator=g, dtype=torch.float64))
    labels = torch.randint(0, v, (b, t), generator=g)
    labels[0, :5] = -100
    labels[-1, 20:25] = -100
    return hidden, head, labels


@pytest.mark.parametrize("chunk", [1, 7, 36, 4096])
def test_equals_full_ce_loss_and_gradients(chunk):
    hidden, head, labels = _case()
    ref = _full(hidden, head, labels)
    g_h, g_w = torch.autograd.grad(ref, [hidden, head.weight])
    got = chunked_causal_lm_loss(hidden, head, labels, chunk_size=chunk)
    c_h, c_w = torch.autograd.grad(got, [hidden, head.weight])
    assert torch.allclose(got.double(), ref, atol=1e-6)
    assert torch.allclose(c_h, g_h, atol=1e-6)
    assert torch.allclose(c_w, g_w, atol=1e-6)


def test_sum_and_num_items():
    hidden, head, labels = _case(1)
    n = int((labels[:, 1:] != -100).sum())
    mean = chunked_causal_lm_loss(hidden, head, labels, chunk_size=5)
    total = chunked_causal_lm_loss(hidden, head, labels, chunk_size=5, reduction="sum")
    assert torch.allclose(total, mean * n, atol=1e-5)
    assert torch.allclose(chunked_causal_lm_loss(hidden, head, labels, num_items=2 * n), mean / 2, atol=1e-6)


def test_pre_shifted_labels():
    hidden, head, labels = _case(4)
    shifted = torch.cat([labels[:, 1:], torch.full_like(labels[:, :1], -100)], dim=1)
    ref = chunked_causal_lm_loss(hidden, head, labels, chunk_size=5)
    assert torch.allclose(chunked_causal_lm_loss(hidden, head, shifted, chunk_size=5, shift=False), ref)


def test_no_target_gives_zero_not_nan():
    hidden, head, labels = _case(2)
    labels[:] = -100
    loss = chunked_causal_lm_loss(hidden, head, labels)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.count_nonzero(hidden.grad) == 0


def test_bad_arguments():
    hidden, head, labels = _case()
    with pytest.raises(ValueError, match="labels shape"):
        chunked_causal_lm_loss(hidden, head, labels[:, 1:])
    with pytest.raises(ValueError, match="chunk_size"):
        chunked_causal_lm_loss(hidden, head, labels, chunk_size=0)
    with pytest.raises(ValueError, match="reduction"):
        chunked_causal_lm_loss(hidden, head, labels, reduction="none")


def test_backward_never_builds_full_logits():
    """Checkpointed chunks: the forward keeps no logits at all (not even one chunk's), only hidden slices."""
    hidden, head, labels = _case(3, b=1, t=64, v=200)
    sizes = []

    def pack(t):
        sizes.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = chunked_causal_lm_loss(hidden, head, labels, chunk_size=8)
    loss.backward()
    assert max(sizes) < 8 * 200  # one chunk of logits is 1,600 floats; the full logits 12,800


def test_causal_lm_loss_matches_hf_loss(tmp_path):
    from transformers import AutoModelForCausalLM, LlamaConfig

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                      num_key_value_heads=1, intermediate_size=64, max_position_embeddings=128)
    model = AutoModelForCausalLM.from_config(cfg).eval()
    ids = torch.randint(0, 64, (1, 40))
    labels = ids.clone()
    labels[0, :10] = -100
    ref = model(input_ids=ids, labels=labels).loss
    got = causal_lm_loss(model, ids, labels, chunk_size=9)
    assert torch.allclose(got, ref, atol=1e-5)
