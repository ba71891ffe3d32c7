"""Long-context evaluation harness for any causal LM with the HF interface (plain, RoPE-extended, beacon).

A model needs only ``model(input_ids=, labels=) -> .loss`` and ``model.generate(input_ids=, max_new_tokens=,
do_sample=False) -> ids`` (prompt + new); ``model.memory.reset()`` is called before each example when present.
"""

from __future__ import annotations

from flagembed.longctx.harness.benchmarks import (
    LONGBENCH_PROMPTS,
    eval_infbench,
    eval_longbench,
    read_rows,
    score_infbench,
    score_longbench,
    truncate_middle,
)
from flagembed.longctx.harness.plots import plot_heatmap, plot_ppl
from flagembed.longctx.harness.prompts import (
    NEEDLE,
    NOISE,
    Prompt,
    build_insertion_prompt,
    grid,
    passkey_prompt,
    passkeys,
    read_haystack,
)
from flagembed.longctx.harness.scorers import (
    classification_score,
    code_sim_score,
    count_score,
    first_integer,
    fuzz_ratio,
    needle_score,
    normalize_answer,
    passkey_score,
    qa_f1_score,
    retrieval_score,
    rouge_l,
    rouge_score,
)
from flagembed.longctx.harness.tasks import (
    eval_needle,
    eval_passkey,
    eval_perplexity,
    eval_topic,
    perplexity_by_length,
    sliding_windows,
)

__all__ = [
    "LONGBENCH_PROMPTS",
    "NEEDLE",
    "NOISE",
    "Prompt",
    "build_insertion_prompt",
    "classification_score",
    "code_sim_score",
    "count_score",
    "eval_infbench",
    "eval_longbench",
    "eval_needle",
    "eval_passkey",
    "eval_perplexity",
    "eval_topic",
    "first_integer",
    "fuzz_ratio",
    "grid",
    "needle_score",
    "normalize_answer",
    "passkey_prompt",
    "passkey_score",
    "passkeys",
    "perplexity_by_length",
    "plot_heatmap",
    "plot_ppl",
    "qa_f1_score",
    "read_haystack",
    "read_rows",
    "retrieval_score",
    "rouge_l",
    "rouge_score",
    "score_infbench",
    "score_longbench",
    "sliding_windows",
    "truncate_middle",
]
