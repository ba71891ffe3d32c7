"""LLM reranker scoring: the "Yes" logit at the last real token, and per-layer score heads.

Per-layer heads file format (written by :func:`save_layer_heads`, read by :func:`load_layer_heads`):
``layer_heads.safetensors`` in the checkpoint folder holds one ``(1, hidden)`` weight per layer,
named ``"<layer>.weight"`` (optional ``"<layer>.bias"``, shape ``(1,)``), where ``<layer>`` is the
number of decoder layers the state has passed through (1 .. num_hidden_layers). Its safetensors
metadata may set ``"scale"`` (hidden states are divided by it before the head; MiniCPM's muP
``hidden_size / dim_model_base``) and ``"softcap"`` (Gemma-2 style ``tanh`` logit capping). Without
the file every layer uses the LM head's "Yes" row (how the reference initialises its heads).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from flagembed.models.pooling import last_token

logger = logging.getLogger(__name__)

HEADS_FILE = "layer_heads.safetensors"


def yes_token_id(tokenizer: Any) -> int:
    """The first token of ``"Yes"`` (the reference's inference-time ``yes_loc``)."""
    ids = tokenizer("Yes", add_special_tokens=False)["input_ids"]
    if not ids:
        raise ValueError("the tokenizer maps 'Yes' to no tokens; cannot score with the yes-logit")
    return int(ids[0])


def softcap(logits: torch.Tensor, cap: float | None) -> torch.Tensor:
    """Gemma-2 final-logit soft capping ``cap * tanh(x / cap)`` (identity when ``cap`` is ``None``)."""
    return logits if not cap else torch.tanh(logits / cap) * cap


def yes_logits(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, yes_id: int) -> torch.Tensor:
    """Logit of ``yes_id`` at each row's last real token, float32 (B,).

    Only the last real position goes through the LM head (one row per pair, not the full vocabulary
    at every position), so the score costs the same as an embedding forward pass.
    """
    base = model.get_decoder() if hasattr(model, "get_decoder") else model.model
    out = base(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    hidden = out[0] if not hasattr(out, "last_hidden_state") else out.last_hidden_state
    last = last_token(hidden, attention_mask)
    head = model.get_output_embeddings()
    logit = last @ head.weight[yes_id].to(last.dtype)
    if getattr(head, "bias", None) is not None:
        logit = logit + head.bias[yes_id]
    return softcap(logit.float(), getattr(model.config, "final_logit_softcapping", None))


class LayerHeads(nn.Module):
    """One linear score head per decoder layer count, applied to the final-normed hidden state."""

    def __init__(self, heads: dict[int, nn.Linear], scale: float = 1.0, softcap: float | None = None) -> None:
        super().__init__()
        self.heads = nn.ModuleDict({str(k): v for k, v in sorted(heads.items())})
        self.scale = float(scale)
        self.softcap = softcap

    @property
    def layers(self) -> list[int]:
        """Layer counts that have a head, ascending."""
        return sorted(int(k) for k in self.heads)

    def score(self, layer: int, normed: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Head ``layer`` on the last real token of ``normed`` (B, L, H) → float32 (B,)."""
        last = last_token(normed, attention_mask)
        head = self.heads[str(layer)]
        out = head(last.to(head.weight.dtype) / self.scale)[:, 0].float()
        return softcap(out, self.softcap)


def load_layer_heads(path: str | Path, model: nn.Module, yes_id: int) -> LayerHeads:
    """Heads from ``layer_heads.safetensors`` in ``path``, else the LM head's "Yes" row for every layer."""
    from safetensors import safe_open

    config = model.config
    hidden = int(config.hidden_size)
    default_cap = getattr(config, "final_logit_softcapping", None)
    file = Path(path) / HEADS_FILE
    param = next(model.parameters())
    if not file.is_file():
        row = model.get_output_embeddings().weight[yes_id].detach()
        n = int(config.num_hidden_layers)
        heads = {}
        for k in range(1, n + 1):
            lin = nn.Linear(hidden, 1, bias=False, device=param.device, dtype=param.dtype)
            lin.weight.data.copy_(row.unsqueeze(0))
            heads[k] = lin
        logger.info("no %s in %s; every layer is scored with the LM head's 'Yes' row", HEADS_FILE, path)
        return LayerHeads(heads, 1.0, default_cap)
    heads = {}
    with safe_open(str(file), framework="pt") as f:
        meta = f.metadata() or {}
        keys = set(f.keys())
        for key in sorted(keys):
            layer, _, kind = key.partition(".")
            if kind != "weight":
                continue
            weight = f.get_tensor(key)
            if weight.shape != (1, hidden):
                raise ValueError(f"{file}: head {key!r} has shape {tuple(weight.shape)}, expected (1, {hidden})")
            bias_key = f"{layer}.bias"
            lin = nn.Linear(hidden, 1, bias=bias_key in keys, device=param.device, dtype=param.dtype)
            lin.weight.data.copy_(weight)
            if bias_key in keys:
                lin.bias.data.copy_(f.get_tensor(bias_key))
            heads[int(layer)] = lin
    if not heads:
        raise ValueError(f"{file} holds no '<layer>.weight' tensors")
    cap = meta.get("softcap")
    return LayerHeads(heads, float(meta.get("scale", 1.0)), float(cap) if cap else default_cap)


def save_layer_heads(
    path: str | Path, heads: dict[int, torch.Tensor], scale: float = 1.0, softcap: float | None = None
) -> Path:
    """Write ``{layer: (1, hidden) weight}`` as ``layer_heads.safetensors`` into ``path`` (atomically)."""
    from safetensors.torch import save

    from flagembed._io import atomic_write

    meta = {"scale": str(scale)}
    if softcap:
        meta["softcap"] = str(softcap)
    tensors = {f"{k}.weight": w.detach().reshape(1, -1).contiguous().cpu() for k, w in heads.items()}
    target = Path(path) / HEADS_FILE
    with atomic_write(target, mode="wb") as f:
        f.write(save(tensors, metadata=meta))
    return target
