"""Differences between transformers 4.4x and 5.x, in one place (public symbols only)."""

from __future__ import annotations

from typing import Any

import torch
import transformers
from packaging.version import Version

TRANSFORMERS_VERSION = Version(transformers.__version__)
IS_TRANSFORMERS_5 = TRANSFORMERS_VERSION >= Version("5.0.0.dev0")
# ``dtype=`` replaced ``torch_dtype=`` in from_pretrained (accepted since 4.56, required in 5.x).
_DTYPE_KWARG = "dtype" if TRANSFORMERS_VERSION >= Version("4.56.0") else "torch_dtype"


def dtype_kwargs(dtype: torch.dtype | None) -> dict[str, Any]:
    """``from_pretrained`` keyword for a parameter dtype on this transformers version."""
    return {} if dtype is None else {_DTYPE_KWARG: dtype}


def cuda_oom_error_types() -> tuple[type[BaseException], ...]:
    """Exception types that mean the accelerator ran out of memory (and nothing else)."""
    types: list[type[BaseException]] = [torch.cuda.OutOfMemoryError]
    generic = getattr(torch, "OutOfMemoryError", None)
    if isinstance(generic, type) and generic not in types:
        types.append(generic)
    return tuple(types)


def from_pretrained(cls: Any, path: Any, **kwargs: Any) -> Any:
    """``cls.from_pretrained(path, ...)`` without transformers' per-load "Loading weights" bar.

    The bar is switched off only for this call and restored after it, so a user's own setting stands.
    """
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    if was_enabled:
        hf_logging.disable_progress_bar()
    try:
        return cls.from_pretrained(path, **kwargs)
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()
