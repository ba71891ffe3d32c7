"""Long-context LLMs: chunked LM loss, evaluation harness (passkey, needle, perplexity, LongBench), RoPE helper
and the context-extension recipe. A job layer: it uses ``models/`` and ``_compat`` only."""

from __future__ import annotations

from flagembed.longctx.loading import load_causal_lm, nf4_config
from flagembed.longctx.loss import IGNORE_INDEX, causal_lm_loss, chunked_causal_lm_loss, shift_labels
from flagembed.longctx.rope import get_rope, set_rope

__all__ = [
    "IGNORE_INDEX",
    "causal_lm_loss",
    "chunked_causal_lm_loss",
    "get_rope",
    "load_causal_lm",
    "nf4_config",
    "set_rope",
    "shift_labels",
]
