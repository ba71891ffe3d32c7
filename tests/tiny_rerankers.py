"""Tiny random reranker checkpoints: deeper decoder LMs (for cutoff layers) with per-layer score heads."""

from __future__ import annotations

from pathlib import Path

import torch
from tiny_models import _save, decoder_tokenizer


def build_decoder_lm(path: Path, arch: str = "llama", layers: int = 4, seed: int = 0, heads: bool = False) -> Path:
    """A ``layers``-deep Qwen2 / Llama / Gemma2 ``*ForCausalLM`` (right-padding tokenizer), optionally with heads."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from flagembed.models.llm_scorer import save_layer_heads

    torch.manual_seed(seed)
    tok = decoder_tokenizer(padding_side="right")
    common = dict(
        vocab_size=len(tok) + 64,  # type: ignore[arg-type]
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=1,
        intermediate_size=64,
        max_position_embeddings=512,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=False,
    )
    if arch == "gemma2":
        common.update(head_dim=16, sliding_window=8, final_logit_softcapping=3.0)
    cfg = AutoConfig.for_model(arch, **common)
    model = AutoModelForCausalLM.from_config(cfg).eval()
    _save(model, tok, path)
    if heads:
        gen = torch.Generator().manual_seed(seed + 1)
        weights = {k: torch.randn(1, 32, generator=gen) for k in range(2, layers + 1)}
        save_layer_heads(path, weights, scale=2.0)
    return path
