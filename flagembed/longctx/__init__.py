"""Long-context LLMs: chunked LM loss, evaluation harness (passkey, needle, perplexity, LongBench), RoPE helper
and the context-extension recipe. A job layer: it uses ``models/`` and ``_compat`` only."""

from __future__ import annotations

from flagembed.longctx.extend import ExtendConfig, extend, merge_adapter
from flagembed.longctx.loading import load_causal_lm, nf4_config
from flagembed.longctx.loss import IGNORE_INDEX, causal_lm_loss, chunked_causal_lm_loss, shift_labels
from flagembed.longctx.qa_builder import ChatClient, build_qa_rows
from flagembed.longctx.retention import eval_mmlu
from flagembed.longctx.rope import get_rope, set_rope
from flagembed.longctx.synthetic import synthetic_rows

__all__ = [
    "ChatClient",
    "ExtendConfig",
    "IGNORE_INDEX",
    "build_qa_rows",
    "eval_mmlu",
    "extend",
    "merge_adapter",
    "synthetic_rows",
    "causal_lm_loss",
    "chunked_causal_lm_loss",
    "get_rope",
    "load_causal_lm",
    "nf4_config",
    "set_rope",
    "shift_labels",
]
