"""Run one planned beacon step through the stock decoder's own submodules (no patched modeling code).

Per layer: input_layernorm -> q/k/v (beacon copies on beacon rows only) -> RoPE over [memory + step] with
positions re-based to 0.. -> attention with an explicit mask (torch SDPA) -> o_proj -> residual -> MLP.
Only submodule names stable across transformers 4.4x-5.x are used (LONG_CONTEXT.md §9.10).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from flagembed.longctx.beacon.memory import BeaconMemory
from flagembed.longctx.beacon.params import decoder
from flagembed.longctx.beacon.planner import StepPlan


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    a, b = x.chunk(2, dim=-1)
    return torch.cat((-b, a), dim=-1)


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    return x * cos + _rotate_half(x) * sin


def _rotary(model: nn.Module) -> nn.Module:
    inner = decoder(model)
    rot = getattr(inner, "rotary_emb", None) or getattr(inner.layers[0].self_attn, "rotary_emb", None)
    if rot is None:
        raise TypeError(f"{type(model).__name__}: no rotary_emb module found")
    return rot


def build_mask(plan: StepPlan, device: torch.device) -> torch.Tensor:
    """Bool mask [T, mem + T] (True = visible): memory visible, causal over the step, beacon rows as planned."""
    t, mem = len(plan.src), plan.mem
    rows = torch.arange(t, device=device)[:, None]
    cols = torch.arange(mem + t, device=device)[None, :]
    mask = (cols < mem) | (cols - mem <= rows)
    for row, ranges in plan.beacon_visible.items():
        mask[row] = False
        for lo, hi in ranges:
            mask[row, lo:hi] = True
    return mask


def _project(attn: nn.Module, name: str, x: torch.Tensor, rows: torch.Tensor | None) -> torch.Tensor:
    out = getattr(attn, f"{name}_proj")(x)
    if rows is not None and hasattr(attn, f"beacon_{name}_proj"):
        beacon = getattr(attn, f"beacon_{name}_proj")(x.index_select(1, rows))
        out = out.index_copy(1, rows, beacon.to(out.dtype))
    return out


def _layer_forward(
    layer: nn.Module,
    config: Any,
    h: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    mask: torch.Tensor,
    rows: torch.Tensor | None,
    past_k: torch.Tensor | None,
    past_v: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    attn = layer.self_attn
    bsz, t, hidden = h.shape
    n_heads, n_kv = config.num_attention_heads, config.num_key_value_heads
    hd = getattr(config, "head_dim", None) or hidden // n_heads
    x = layer.input_layernorm(h)
    q = _project(attn, "q", x, rows).view(bsz, t, n_heads, hd).transpose(1, 2)
    k = _project(attn, "k", x, rows).view(bsz, t, n_kv, hd).transpose(1, 2)
    v = _project(attn, "v", x, rows).view(bsz, t, n_kv, hd).transpose(1, 2)
    keys = k if past_k is None else torch.cat([past_k, k], dim=2)
    values = v if past_v is None else torch.cat([past_v, v], dim=2)
    cos4, sin4 = cos[:, None], sin[:, None]
    q_rot = _rope(q, cos4[:, :, -t:], sin4[:, :, -t:])
    k_rot = _rope(keys, cos4, sin4)
    if n_heads != n_kv:
        k_rot = k_rot.repeat_interleave(n_heads // n_kv, dim=1)
        values_r = values.repeat_interleave(n_heads // n_kv, dim=1)
    else:
        values_r = values
    scale = getattr(attn, "scaling", None) or hd**-0.5
    out = F.scaled_dot_product_attention(q_rot, k_rot, values_r, attn_mask=mask, scale=scale)
    out = out.transpose(1, 2).reshape(bsz, t, n_heads * hd)
    h = h + _project(attn, "o", out, rows)
    h = h + layer.mlp(layer.post_attention_layernorm(h))
    return h, k, v


def run_step(
    model: nn.Module,
    plan: StepPlan,
    ids: torch.Tensor,
    memory: BeaconMemory,
    gradient_checkpointing: bool = False,
) -> torch.Tensor:
    """Run one step; update ``memory``; return the final-norm hidden states of the step's tokens [B, T, H]."""
    inner = decoder(model)
    device = ids.device
    src = torch.tensor(plan.src, device=device)
    beacon_rows = plan.beacon_rows
    rows = torch.tensor(beacon_rows, device=device) if beacon_rows else None
    h = inner.embed_tokens(ids.index_select(1, src.clamp(min=0)))
    if rows is not None:
        b = inner.beacon_embed_tokens.weight[0].to(h.dtype)
        is_beacon = (src < 0)[None, :, None]
        h = torch.where(is_beacon, b.expand_as(h), h)
    mem = plan.mem
    pos = torch.tensor(list(range(mem)) + plan.positions, device=device)[None].expand(ids.shape[0], -1)
    cos, sin = _rotary(model)(h, pos)
    mask = build_mask(plan, device)
    for idx, layer in enumerate(inner.layers):
        past = memory.past(idx)
        pk, pv = (None, None) if past is None else past
        if gradient_checkpointing and torch.is_grad_enabled():
            h, k, v = checkpoint(
                _layer_forward, layer, model.config, h, cos, sin, mask, rows, pk, pv, use_reentrant=False
            )
        else:
            h, k, v = _layer_forward(layer, model.config, h, cos, sin, mask, rows, pk, pv)
        memory.update(idx, k, v, plan)
    return inner.norm(h)
