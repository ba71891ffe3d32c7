"""Builders for merge tests: families of tiny models that differ only by seed, M3 head files, a larger BERT."""

from __future__ import annotations

from pathlib import Path

import tiny_models
import torch


def build_family(root: Path, model_type: str, n: int = 3) -> list[Path]:
    """``n`` tiny checkpoints of one architecture (random seeds 0..n-1) for ``model_type``."""
    out = []
    for seed in range(n):
        path = root / f"{model_type}-{seed}"
        if model_type == "encoder":
            tiny_models.build_bert(path, seed=seed)
            add_m3_heads(path, seed)
        elif model_type == "reranker":
            tiny_models.build_xlmr(path, seed=seed, classifier=True)
        else:
            tiny_models.build_decoder(path, "qwen2", seed=seed, causal_lm=True)
        out.append(path)
    return out


def add_m3_heads(path: Path, seed: int, hidden: int = 32) -> None:
    """BGE-M3's ``sparse_linear.pt`` (hidden → 1) and ``colbert_linear.pt`` (hidden → hidden) state dicts."""
    gen = torch.Generator().manual_seed(1000 + seed)
    torch.save({"weight": torch.randn(1, hidden, generator=gen), "bias": torch.randn(1, generator=gen)},
               path / "sparse_linear.pt")  # fmt: skip
    torch.save({"weight": torch.randn(hidden, hidden, generator=gen), "bias": torch.randn(hidden, generator=gen)},
               path / "colbert_linear.pt")  # fmt: skip


def build_big_bert(path: Path, seed: int, hidden: int = 256, layers: int = 4, vocab: int = 30000) -> Path:
    """A BERT of roughly 45 MB (fp32) for memory measurements; reuses the tiny tokenizer."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    tok = tiny_models.bert_tokenizer(path)
    cfg = BertConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=4 * hidden,
        max_position_embeddings=128,
    )
    return tiny_models._save(BertModel(cfg).eval(), tok, path)


def add_noise(path: Path, seed: int, std: float = 0.2) -> Path:
    """Add Gaussian noise to every floating tensor of ``path``'s weights (random models are near-identical)."""
    from safetensors.torch import load_file, save_file

    gen = torch.Generator().manual_seed(seed)
    state = load_file(str(path / "model.safetensors"))
    for k, v in state.items():
        if v.is_floating_point():
            state[k] = v + std * torch.randn(v.shape, generator=gen, dtype=v.dtype)
    save_file(state, str(path / "model.safetensors"), metadata={"format": "pt"})
    return path
