"""Tiny random Llama / Qwen2 / Mistral causal LMs for the beacon tests (LONG_CONTEXT.md §12 configs)."""

from __future__ import annotations

import torch

KINDS = ("llama", "qwen2", "mistral")


def tiny_lm(kind: str = "llama", attn: str = "eager", seed: int = 0, **extra):
    from transformers import (
        LlamaConfig,
        LlamaForCausalLM,
        MistralConfig,
        MistralForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
    )

    common = dict(
        vocab_size=256,
        hidden_size=64,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_hidden_layers=2,
        intermediate_size=128,
        eos_token_id=2,
        bos_token_id=1,
        pad_token_id=0,
        max_position_embeddings=512,
        tie_word_embeddings=False,
    )
    common.update(extra)
    if kind == "llama":
        cfg, cls = LlamaConfig(**common), LlamaForCausalLM
    elif kind == "qwen2":
        cfg, cls = Qwen2Config(**common), Qwen2ForCausalLM
    else:
        cfg, cls = MistralConfig(sliding_window=None, **common), MistralForCausalLM
    cfg._attn_implementation = attn
    torch.manual_seed(seed)
    model = cls(cfg).eval()
    with torch.no_grad():  # random init is near-uniform; sharper weights make equivalence checks meaningful
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(3.0)
    return model


def ids(n: int, seed: int = 1, batch: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, 256, (batch, n), generator=g)
