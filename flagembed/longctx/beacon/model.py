"""``BeaconModel``: a stock HF causal LM plus beacon parameters, with the HF causal-LM call interface."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers.modeling_outputs import CausalLMOutputWithPast

from flagembed.longctx.beacon.params import (
    attach_beacon_params,
    load_beacon_tensors,
    resolve_folder,
    settings_from_folder,
)
from flagembed.longctx.beacon.planner import BeaconSettings
from flagembed.longctx.beacon.session import BeaconSession


class BeaconModel(nn.Module):
    """``model(input_ids=..., labels=...)`` -> ``.loss`` (mean over raw tokens of all windows) and ``.logits``
    (the last step's raw tokens only, as the reference); ``model.generate(...)`` across window boundaries.

    Each call starts a new sequence unless ``reset=False`` (then tokens continue the current one).
    """

    def __init__(self, model: nn.Module, settings: BeaconSettings | None = None) -> None:
        super().__init__()
        self.model = model
        self.settings = settings or BeaconSettings.from_config(model.config)
        attach_beacon_params(model, self.settings)
        self.session = BeaconSession(model, self.settings)

    @property
    def config(self) -> Any:
        return self.model.config

    @property
    def device(self) -> torch.device:
        return self.model.lm_head.weight.device

    @property
    def memory(self) -> Any:
        return self.session.memory

    def reset(self) -> None:
        """Forget the current sequence (memory, planner, buffer)."""
        self.session.reset()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        reset: bool = True,
        **_: Any,
    ) -> CausalLMOutputWithPast:
        if attention_mask is not None and not bool(attention_mask.all()):
            raise ValueError("attention_mask has padding: the beacon runtime supports unpadded sequences only")
        if reset:
            self.session.reset()
        self.session.training = self.training
        self.session.planner.training = self.training
        with torch.set_grad_enabled(self.training and torch.is_grad_enabled()):
            out = self.session.feed(input_ids, labels)
        loss = None
        if labels is not None:
            loss = out.loss_sum / out.count if out.count else input_ids.new_zeros((), dtype=torch.float32)
        return CausalLMOutputWithPast(loss=loss, logits=out.logits)

    def generate(self, input_ids: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        """Prompt + new ids, like HF ``generate`` for decoder-only models (see ``generate.generate``)."""
        from flagembed.longctx.beacon.generate import generate

        return generate(self, input_ids, **kwargs)

    def save_pretrained(self, path: str | Path, **kwargs: Any) -> None:
        """Base + beacon tensors under the reference's names, and the ``beacon_*`` config keys."""
        self.model.config.update(self.settings.to_config())
        self.model.save_pretrained(path, **kwargs)


def load_beacon_model(
    name_or_path: str | Path, dtype: torch.dtype | None = None, device: str | None = None, **overrides: Any
) -> BeaconModel:
    """Load a base or beacon checkpoint with the stock transformers class (no remote code).

    ``beacon_*`` config keys and tensors are used when present; missing tensors are initialised from the
    base (q/k/v/o copies, eos row). ``overrides`` are BeaconSettings fields (window=..., ratio=(4,), ...).
    """
    from transformers import AutoModelForCausalLM

    from flagembed._compat import dtype_kwargs, from_pretrained

    folder = resolve_folder(name_or_path)
    model = from_pretrained(
        AutoModelForCausalLM, str(folder or name_or_path), trust_remote_code=False, **dtype_kwargs(dtype)
    )
    keys = settings_from_folder(folder)
    for k, v in keys.items():
        setattr(model.config, k, v)
    settings = BeaconSettings.from_config(model.config, **overrides)
    beacon = BeaconModel(model, settings)
    if folder is not None:
        load_beacon_tensors(model, folder)
    if device:
        beacon.to(device)
    return beacon.eval()
