"""Run a window of a Hugging Face decoder's layers: early exit, mid-stack hidden states, token compression.

Layerwise and lightweight rerankers (REFERENCE.md §2.5-2.6) need the state after layer ``k`` and,
for the lightweight one, to continue from a *shortened* sequence. Rather than re-implementing each
architecture's attention masks and rotary embeddings, the model's own forward runs over a window of
its layers: ``layers[start:stop]`` are swapped in for the duration of the call (with the matching
slice of ``config.layer_types`` for models that alternate sliding/full attention), a pre-hook
feeds the window's first layer a given hidden state, and forward hooks record each layer's output.
Layers outside the window are never called, which is what makes early exit save time.

The swap mutates the model for the duration of one call: do not run the same model object from
several threads at once.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn


def decoder_stack(model: nn.Module) -> nn.Module:
    """The decoder (``model.model`` for ``*ForCausalLM``) that owns ``layers`` and ``norm``.

    Raises:
        TypeError: the model has no ``layers`` list (not a standard Hugging Face decoder).
    """
    base = model.get_decoder() if hasattr(model, "get_decoder") else getattr(model, "model", model)
    if isinstance(getattr(base, "layers", None), nn.ModuleList) and hasattr(base, "norm"):
        return base
    raise TypeError(
        f"{type(model).__name__} is not a standard decoder (no .layers ModuleList and .norm); "
        "layerwise/lightweight scoring needs a Llama/Gemma/Qwen-style model"
    )


def num_layers(model: nn.Module) -> int:
    """Number of decoder layers."""
    return len(decoder_stack(model).layers)


def _first_tensor(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, (tuple, list)) else out


@contextmanager
def _window(base: nn.Module, start: int, stop: int) -> Iterator[nn.ModuleList]:
    layers = base.layers
    config = base.config
    types = getattr(config, "layer_types", None)
    window = nn.ModuleList(list(layers)[start:stop])
    base.layers = window
    if isinstance(types, list):
        config.layer_types = types[start:stop]
    try:
        yield window
    finally:
        base.layers = layers
        if isinstance(types, list):
            config.layer_types = types


def run_layers(
    model: nn.Module,
    attention_mask: torch.Tensor,
    *,
    start: int,
    stop: int,
    capture: Sequence[int],
    input_ids: torch.Tensor | None = None,
    hidden: torch.Tensor | None = None,
) -> dict[int, torch.Tensor]:
    """Run layers ``start .. stop-1`` and return the raw (un-normed) state after each layer in ``capture``.

    Args:
        model: a Hugging Face ``*ForCausalLM`` or decoder model.
        attention_mask: (B, L) mask of the sequence entering layer ``start`` (right padding).
        start: first layer to run; 0 starts from ``input_ids`` (embeddings), otherwise ``hidden``
            is the state after ``start`` layers.
        stop: layers ``>= stop`` are not run (early exit).
        capture: layer counts ``k`` (``start < k <= stop``) whose output state is wanted.
        input_ids: token ids when ``start == 0``.
        hidden: (B, L, H) hidden state entering layer ``start`` when ``start > 0``.

    Returns:
        ``{k: state after k layers}`` for each ``k`` in ``capture``.
    """
    base = decoder_stack(model)
    if not 0 <= start < stop <= len(base.layers):
        raise ValueError(f"layer window [{start}, {stop}) is outside the model's {len(base.layers)} layers")
    bad = [k for k in capture if not start < k <= stop]
    if bad:
        raise ValueError(f"capture layers {bad} are outside the window ({start}, {stop}]")
    if start > 0 and hidden is None:
        raise ValueError("a window that starts above layer 0 needs the incoming hidden state")
    out: dict[int, torch.Tensor] = {}
    handles = []
    batch, length = attention_mask.shape
    with _window(base, start, stop) as window:
        for k in capture:
            layer = window[k - 1 - start]
            handles.append(layer.register_forward_hook(lambda _m, _a, o, k=k: out.__setitem__(k, _first_tensor(o))))
        if start > 0:
            handles.append(window[0].register_forward_pre_hook(_replace_hidden(hidden), with_kwargs=True))
        try:
            positions = torch.arange(length, device=attention_mask.device).unsqueeze(0).expand(batch, -1)
            kwargs: dict[str, Any] = {"attention_mask": attention_mask, "position_ids": positions, "use_cache": False}
            if start == 0:
                base(input_ids=input_ids, **kwargs)
            else:
                assert hidden is not None
                base(inputs_embeds=torch.zeros_like(hidden), **kwargs)
        finally:
            for h in handles:
                h.remove()
    return out


def _replace_hidden(hidden: torch.Tensor | None) -> Any:
    def hook(_module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        if args:
            return (hidden, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": hidden}

    return hook


def token_compress(
    hidden: torch.Tensor,
    attention_mask: torch.Tensor,
    head_len: torch.Tensor,
    tail_len: torch.Tensor,
    ratio: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace each row's passage tokens by means of ``ratio`` consecutive states (REFERENCE.md §2.6).

    Row layout (right padded): ``head_len`` query tokens, ``P`` passage tokens, ``tail_len`` prompt
    tokens. The passage becomes ``ceil(P / ratio)`` states, each the mean of its chunk's real tokens;
    query and prompt states are kept as they are. Returns the new ``(hidden, attention_mask)``.
    """
    if ratio < 1:
        raise ValueError(f"compress_ratio must be >= 1, got {ratio}")
    batch, length, _ = hidden.shape
    device = hidden.device
    total = attention_mask.sum(dim=1)
    head_len = head_len.to(device)
    tail_len = tail_len.to(device)
    passage = (total - head_len - tail_len).clamp(min=0)
    kept = (passage + ratio - 1) // ratio
    new_len = head_len + kept + tail_len
    width = int(new_len.max())
    pos = torch.arange(length, device=device).unsqueeze(0)
    head, p_end = head_len.unsqueeze(1), (head_len + passage).unsqueeze(1)
    in_passage = (pos >= head) & (pos < p_end)
    chunk = torch.div(pos - head, ratio, rounding_mode="floor")
    chunk_size = torch.minimum(torch.full_like(chunk, ratio), p_end - head - chunk * ratio)
    dest = torch.where(pos < head, pos, head + chunk)
    dest = torch.where(pos >= p_end, pos - passage.unsqueeze(1) + kept.unsqueeze(1), dest)
    real = pos < total.unsqueeze(1)
    dest = torch.where(real, dest, torch.full_like(dest, width))  # padding goes to a spare column
    weight = torch.where(
        in_passage, 1.0 / chunk_size.clamp(min=1).to(torch.float32), torch.ones_like(pos, dtype=torch.float32)
    )
    src = hidden.float() * weight.unsqueeze(-1)
    new = torch.zeros(batch, width + 1, hidden.shape[-1], device=device, dtype=torch.float32)
    new.scatter_add_(1, dest.unsqueeze(-1).expand_as(src), src)
    new_mask = (torch.arange(width, device=device).unsqueeze(0) < new_len.unsqueeze(1)).to(attention_mask.dtype)
    return new[:, :width].to(hidden.dtype), new_mask
