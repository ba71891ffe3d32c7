"""Long-context LLMs: chunked LM loss, evaluation harness (passkey, needle, perplexity, LongBench), RoPE helper
and the context-extension recipe. A job layer: it uses ``models/`` and ``_compat`` only."""

from __future__ import annotations

from flagembed.longctx.loss import IGNORE_INDEX, causal_lm_loss, chunked_causal_lm_loss, shift_labels

__all__ = ["IGNORE_INDEX", "causal_lm_loss", "chunked_causal_lm_loss", "shift_labels"]
