"""Visualized-BGE weights: the released ``.pth`` key layout and flagembed's own folder layout.

Reference layout (the whole ``Visualized_BGE.state_dict()``): ``bge_embeddings.*``, ``bge_encoder.*``,
``bge_pooler.*``, ``visual_proj.*``, ``model_visual.logit_scale`` and ``model_visual.visual.*`` (the EVA
tower, including its recomputable RoPE tables). Own layout: a normal text checkpoint folder (loads with
:class:`flagembed.Embedder` alone) plus ``visual_config.json`` and ``visual.safetensors``
(``visual.*``, ``visual_proj.*``, ``logit_scale``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from flagembed.models.vision.eva import EvaConfig, reference_rope_keys, rope_tables
from flagembed.models.vision.multimodal import VisualBGE

VISUAL_CONFIG = "visual_config.json"
VISUAL_WEIGHTS = "visual.safetensors"
FORMAT = "flagembed.visual_bge"
_TEXT_PREFIXES = {"embeddings.": "bge_embeddings.", "encoder.": "bge_encoder.", "pooler.": "bge_pooler."}
_IGNORED_BUFFERS = ("embeddings.position_ids", "embeddings.token_type_ids")  # persistent only in old transformers


def _text_state(model: VisualBGE) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.text.backbone.state_dict().items() if not k.startswith(_IGNORED_BUFFERS)}


def reference_state_dict(model: VisualBGE) -> dict[str, torch.Tensor]:
    """The model's weights under the released ``Visualized_*.pth`` key names (RoPE tables included)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in _text_state(model).items():
        prefix = next(p for p in _TEXT_PREFIXES if key.startswith(p))
        out[_TEXT_PREFIXES[prefix] + key[len(prefix) :]] = value
    out["visual_proj.weight"] = model.visual_proj.weight
    out["visual_proj.bias"] = model.visual_proj.bias
    out["model_visual.logit_scale"] = model.logit_scale
    for key, value in model.visual.state_dict().items():
        out[f"model_visual.visual.{key}"] = value
    cfg = model.visual.config
    cos, sin = rope_tables(cfg.grid, cfg.head_dim, cfg.pt_hw_seq_len)
    for key in reference_rope_keys(cfg):
        out[f"model_visual.visual.{key}"] = cos if key.endswith("cos") else sin
    return {k: v.detach() for k, v in out.items()}


def load_reference_state_dict(model: VisualBGE, state: dict[str, torch.Tensor]) -> None:
    """Load a released-layout state dict strictly (exact key set and shapes; RoPE tables checked, not loaded).

    Raises:
        ValueError: missing or unexpected keys (up to 5 of each named), a shape mismatch, or stored RoPE
            tables that disagree with the configured geometry.
    """
    state = {k.removeprefix("module."): v for k, v in state.items()}
    state = {k: v for k, v in state.items() if not k.removeprefix("bge_").startswith(_IGNORED_BUFFERS)}
    expected = reference_state_dict(model)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"not a Visualized-BGE weight file for this model: {len(missing)} missing keys {missing[:5]}, "
            f"{len(unexpected)} unexpected keys {unexpected[:5]}"
        )
    for key, ref in expected.items():
        if tuple(state[key].shape) != tuple(ref.shape):
            raise ValueError(f"weight {key} has shape {tuple(state[key].shape)}, the model expects {tuple(ref.shape)}")
    for key in reference_rope_keys(model.visual.config):
        full = f"model_visual.visual.{key}"
        if not torch.allclose(state[full].float(), expected[full].float(), atol=1e-4):
            raise ValueError(f"stored RoPE table {full} does not match the tower geometry {model.visual.config}")
    text = {}
    for key, value in state.items():
        for ours, theirs in _TEXT_PREFIXES.items():
            if key.startswith(theirs):
                text[ours + key[len(theirs) :]] = value
    _load_strict(model.text.backbone, text, "text")
    vis = {k[len("model_visual.visual.") :]: v for k, v in state.items() if k.startswith("model_visual.visual.")}
    _load_strict(model.visual, {k: v for k, v in vis.items() if "rope." not in k}, "vision")
    with torch.no_grad():
        model.visual_proj.weight.copy_(state["visual_proj.weight"])
        model.visual_proj.bias.copy_(state["visual_proj.bias"])
        model.logit_scale.copy_(state["model_visual.logit_scale"])


def _load_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    missing, unexpected = module.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith(_IGNORED_BUFFERS)]
    if missing or unexpected:
        raise ValueError(f"{what} weights: missing {missing[:5]}, unexpected {unexpected[:5]}")


def read_reference_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A ``.pth`` state dict (loaded with ``weights_only=True``) or a safetensors file in the same layout."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Visualized-BGE weight file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a state dict")
    return state.get("state_dict", state) if "state_dict" in state and isinstance(state["state_dict"], dict) else state


def is_visual_folder(path: str | Path) -> bool:
    """Whether ``path`` is a folder written by :func:`save_visual_files` (text checkpoint + vision files)."""
    return (Path(path) / VISUAL_CONFIG).is_file()


def read_visual_config(path: str | Path) -> dict[str, Any]:
    """``visual_config.json`` of an own-layout folder (format checked)."""
    data = json.loads((Path(path) / VISUAL_CONFIG).read_text(encoding="utf-8"))
    if data.get("format") != FORMAT:
        raise ValueError(f"{Path(path) / VISUAL_CONFIG} is not a {FORMAT} config (format={data.get('format')!r})")
    return data


def save_visual_files(model: VisualBGE, folder: str | Path, **extra: Any) -> None:
    """Write ``visual_config.json`` + ``visual.safetensors`` into ``folder`` (each atomically)."""
    from safetensors.torch import save

    from flagembed._io import atomic_write, save_json

    folder = Path(folder)
    tensors = {f"visual.{k}": v for k, v in model.visual.state_dict().items()}
    tensors["visual_proj.weight"] = model.visual_proj.weight
    tensors["visual_proj.bias"] = model.visual_proj.bias
    tensors["logit_scale"] = model.logit_scale
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    with atomic_write(folder / VISUAL_WEIGHTS, "wb") as f:
        f.write(save(tensors))
    config = {"format": FORMAT, "version": 1, "vision": model.visual.config.to_dict(), **extra}
    save_json(folder / VISUAL_CONFIG, config)


def save_visual_folder(model: VisualBGE, tokenizer: Any, folder: str | Path, **extra: Any) -> Path:
    """Write the whole own layout into ``folder``: text backbone + tokenizer + vision files (each file atomically)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.text.backbone.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    save_visual_files(model, folder, **extra)
    return folder


def load_visual_files(model: VisualBGE, folder: str | Path) -> None:
    """Load ``visual.safetensors`` strictly into ``model``'s vision side."""
    from safetensors.torch import load_file

    state = load_file(str(Path(folder) / VISUAL_WEIGHTS))
    _load_strict(model.visual, {k[7:]: v for k, v in state.items() if k.startswith("visual.")}, "vision")
    rest = {k: v for k, v in state.items() if not k.startswith("visual.")}
    expected = {"visual_proj.weight", "visual_proj.bias", "logit_scale"}
    if set(rest) != expected:
        raise ValueError(f"{Path(folder) / VISUAL_WEIGHTS}: expected keys {sorted(expected)}, got {sorted(rest)}")
    with torch.no_grad():
        model.visual_proj.weight.copy_(rest["visual_proj.weight"])
        model.visual_proj.bias.copy_(rest["visual_proj.bias"])
        model.logit_scale.copy_(rest["logit_scale"])


def vision_config(folder_config: dict[str, Any]) -> EvaConfig:
    """The tower geometry recorded in ``visual_config.json``."""
    return EvaConfig.from_dict(folder_config["vision"]).check()
