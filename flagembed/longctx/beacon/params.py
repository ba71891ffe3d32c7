"""Beacon parameters on a stock HF causal LM: attached under the reference's names, initialised, saved, loaded.

Names (LONG_CONTEXT.md §2): ``model.beacon_embed_tokens.weight`` [1, H] and
``model.layers.{i}.self_attn.beacon_{q,k,v,o}_proj.{weight,bias}`` (bias where the base projection has one).
They are plain submodules of the stock model, so ``save_pretrained`` writes them under exactly those names and
the stock forward ignores them.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from flagembed.longctx.beacon.planner import BeaconSettings

logger = logging.getLogger(__name__)
SUPPORTED = ("llama", "qwen2", "mistral")


def decoder(model: nn.Module) -> nn.Module:
    """The decoder stack (``model.model``) of a Llama/Qwen2/Mistral causal LM."""
    inner = getattr(model, "model", None)
    if inner is None or not hasattr(inner, "layers") or not hasattr(inner, "embed_tokens"):
        raise TypeError(f"{type(model).__name__}: expected a causal LM with .model.layers and .model.embed_tokens")
    return inner


def check_supported(model: nn.Module) -> None:
    kind = getattr(model.config, "model_type", None)
    if kind not in SUPPORTED:
        raise TypeError(f"model_type {kind!r}: Activation Beacon supports {', '.join(SUPPORTED)}")


def attach_beacon_params(model: nn.Module, settings: BeaconSettings) -> None:
    """Add the beacon embedding and projection copies (if absent), initialised as the reference does.

    Projections are copied (not tied) from q/k/v/o; the embedding row from the first eos (or the bos) row.
    No padding_idx: the reference's ``padding_idx=pad_token_id`` zeroes the row or crashes (§3.10.5).
    """
    check_supported(model)
    inner = decoder(model)
    base = inner.embed_tokens.weight
    if not hasattr(inner, "beacon_embed_tokens"):
        token = model.config.eos_token_id if settings.embed_init == "eos" else model.config.bos_token_id
        if isinstance(token, (list, tuple)):
            token = token[0] if token else None
        if token is None or not 0 <= int(token) < base.shape[0]:
            raise ValueError(f"beacon_embed_init={settings.embed_init!r}: the config has no usable token id ({token})")
        emb = nn.Embedding(1, base.shape[1], device=base.device, dtype=base.dtype)
        with torch.no_grad():
            emb.weight.copy_(base[int(token)].detach()[None])
        inner.beacon_embed_tokens = emb
    for layer in inner.layers:
        attn = layer.self_attn
        for p in settings.param:
            name = f"beacon_{p}_proj"
            if hasattr(attn, name):
                continue
            src: nn.Linear = getattr(attn, f"{p}_proj")
            copy = nn.Linear(
                src.in_features,
                src.out_features,
                bias=src.bias is not None,
                device=src.weight.device,
                dtype=src.weight.dtype,
            )
            copy.load_state_dict({k: v.detach().clone() for k, v in src.state_dict().items()})
            setattr(attn, name, copy)
    model.config.update(settings.to_config())


def beacon_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The beacon tensors of a model under the reference's names."""
    return {k: v for k, v in model.state_dict().items() if "beacon_" in k}


def freeze_base(model: nn.Module) -> int:
    """Train only beacon parameters (the reference's ``only_train_beacon``); returns the trainable count."""
    count = 0
    for name, param in model.named_parameters():
        param.requires_grad_("beacon_" in name)
        count += param.numel() if param.requires_grad else 0
    return count


def load_beacon_tensors(model: nn.Module, folder: str | Path) -> list[str]:
    """Load beacon tensors found in a checkpoint folder's safetensors files; returns the names loaded."""
    from safetensors import safe_open

    folder = Path(folder)
    wanted = set(beacon_state_dict(model))
    found: dict[str, torch.Tensor] = {}
    for path in sorted(folder.glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():
                if "beacon_" in key:
                    if key not in wanted:
                        raise ValueError(f"{path.name}: beacon tensor {key!r} has no place in this model")
                    found[key] = f.get_tensor(key)
    if found:
        result = model.load_state_dict(found, strict=False)
        if result.unexpected_keys:
            raise ValueError(f"unexpected beacon tensors: {result.unexpected_keys[:3]}")
    missing = sorted(wanted - set(found))
    if found and missing:
        logger.warning(
            "%d beacon tensors missing from %s; initialised from the base (e.g. %s)", len(missing), folder, missing[0]
        )
    return sorted(found)


def resolve_folder(name_or_path: str | Path) -> Path | None:
    """A local folder for a path or a hub id already in the cache (no download); None if neither."""
    path = Path(name_or_path)
    if path.is_dir():
        return path
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(str(name_or_path), local_files_only=True))
    except (OSError, ValueError) as exc:  # not a cached hub id: the base loader reports it
        logger.debug("no cached snapshot for %s: %s", name_or_path, exc)
        return None


def settings_from_folder(folder: Path | None) -> dict[str, Any]:
    """The ``beacon_*`` keys of a checkpoint's config.json ({} when absent)."""
    if folder is None or not (folder / "config.json").is_file():
        return {}
    raw = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    return {k: v for k, v in raw.items() if k.startswith("beacon_")}
