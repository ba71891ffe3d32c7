"""Load a causal LM and its tokenizer for long-context work, optionally with a changed RoPE or in 4-bit."""

from __future__ import annotations

import os
from typing import Any

import torch

from flagembed._compat import dtype_kwargs, from_pretrained
from flagembed.longctx.rope import set_rope
from flagembed.models import HubOptions, load_tokenizer, resolve_model_path

DTYPES = {"auto": None, "fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def parse_dtype(name: str) -> torch.dtype | None:
    """``auto``/``fp32``/``fp16``/``bf16`` to a torch dtype (None: the checkpoint's own)."""
    if name not in DTYPES:
        raise ValueError(f"dtype {name!r} is not one of {', '.join(DTYPES)}")
    return DTYPES[name]


def nf4_config(compute_dtype: torch.dtype = torch.bfloat16) -> Any:
    """The QLoRA quantisation: bitsandbytes 4-bit NF4 with double quantisation, computing in ``compute_dtype``."""
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute_dtype)


def load_causal_lm(
    name_or_path: str | os.PathLike[str],
    *,
    device: str | None = None,
    dtype: str = "auto",
    rope: dict[str, Any] | None = None,
    load_in_4bit: bool = False,
    trust_remote_code: bool = False,
    hub: HubOptions | None = None,
) -> tuple[Any, Any]:
    """``(model, tokenizer)`` in eval mode; ``rope`` holds :func:`set_rope` keywords applied before the weights load.

    Raises:
        FileNotFoundError: the model is neither a folder nor available offline.
        ValueError: a bad dtype or RoPE setting.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    path = resolve_model_path(name_or_path, hub)
    config = AutoConfig.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    if rope:
        set_rope(config, **rope)
    torch_dtype = parse_dtype(dtype)
    kwargs: dict[str, Any] = {"config": config, "trust_remote_code": trust_remote_code, **dtype_kwargs(torch_dtype)}
    if load_in_4bit:
        kwargs["quantization_config"] = nf4_config(torch_dtype or torch.bfloat16)
    model = from_pretrained(AutoModelForCausalLM, str(path), **kwargs)
    if device is not None and not load_in_4bit:
        model = model.to(device)
    tokenizer = load_tokenizer(path, trust_remote_code=trust_remote_code)
    return model.eval(), tokenizer


__all__ = ["DTYPES", "load_causal_lm", "nf4_config", "parse_dtype"]
