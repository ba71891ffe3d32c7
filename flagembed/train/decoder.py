"""Decoder-only embedder training: tokenizer set-up (EOS, left padding) and ICL in-batch examples (§3.c).

As FlagEmbedding's ``finetune.embedder.decoder_only``: every query and passage ends with EOS (the
last-token state is the embedding), the pad token is unk else eos, padding is on the left. For the
ICL variant each query may get up to 5 examples drawn from the other records of its (same-dataset) batch.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from flagembed.engine import tokenize

logger = logging.getLogger(__name__)


def is_decoder_only(config: Any) -> bool:
    """Whether a transformers config is a causal LM without a masked-LM form (Qwen2, Mistral, Llama, Gemma...)."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    kind = getattr(config, "model_type", "")
    if getattr(config, "is_encoder_decoder", False):
        return False
    return kind in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and kind not in MODEL_FOR_MASKED_LM_MAPPING_NAMES


def _ends_with_eos(tokenizer: Any) -> bool:
    ids = tokenizer("a")["input_ids"]
    return bool(ids) and ids[-1] == tokenizer.eos_token_id


def prepare_decoder_tokenizer(tokenizer: Any) -> bool:
    """Left padding, a pad token, and EOS at the end of every text; returns whether the tokenizer adds EOS itself.

    The tokenizer is asked to add EOS (``add_eos_token``, saved with it, so the trained model's inference
    tokenization matches); when it cannot, the caller appends EOS to the token ids (and inference must too).

    Raises:
        ValueError: the tokenizer has no EOS token.
    """
    if tokenizer.eos_token_id is None:
        raise ValueError("a decoder-only embedder needs a tokenizer with an eos_token (the pooled last token)")
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    if _ends_with_eos(tokenizer):
        return True
    bos = tokenizer.bos_token_id
    adds_bos = bos is not None and tokenizer("a")["input_ids"][:1] == [bos]
    try:
        tokenizer.add_bos_token = adds_bos
        tokenizer.add_eos_token = True
    except AttributeError:  # a tokenizer class without these switches (transformers 4.x non-Llama)
        pass
    if _ends_with_eos(tokenizer):
        return True
    logger.warning(
        "tokenizer %s cannot add EOS itself: training appends it; append it at inference too",
        type(tokenizer).__name__,
    )
    return False


def icl_queries(
    queries: Sequence[str],
    positives: Sequence[str],
    tokenizer: Any,
    rng: np.random.Generator,
    *,
    query_max_len: int,
    example_query_max_len: int,
    example_passage_max_len: int,
    suffix: str = "\n<response>",
    query_reserve: int = 512,
    max_examples: int = 5,
) -> list[str]:
    """The queries of one same-dataset batch with in-context examples drawn from the batch (bge-en-icl training).

    Example ``j`` is (query ``j`` cut to ``example_query_max_len`` tokens, its positive cut to
    ``example_passage_max_len``). Query ``i`` draws ``k`` ~ U{0..max_examples}; ``min(k+1, n)`` distinct
    indices are sampled, ``i`` removed, the first ``k`` kept; ``example_query + suffix + example_passage + "\\n\\n"``
    pieces are added while the prefix stays within ``query_max_len - query_reserve`` tokens (the reference's
    budget: ``query_max_len=512`` gives no examples, issue #1158). The prompt ``prefix + query`` is cut to
    ``query_max_len - len(<bos>) - len(suffix + <eos>)`` tokens, decoded, and ``suffix`` appended.
    """
    n = len(queries)
    if len(positives) != n:
        raise ValueError(f"got {n} queries but {len(positives)} positives")

    def cut(texts: Sequence[str], limit: int) -> list[str]:
        return tokenizer.batch_decode(tokenize(tokenizer, list(texts), max(limit, 1), add_special_tokens=False).ids)

    ex_q = cut(queries, example_query_max_len)
    ex_p = cut(positives, example_passage_max_len)
    budget = query_max_len - query_reserve
    bos = tokenizer.bos_token or ""
    eos = tokenizer.eos_token or ""
    n_special = len(tokenizer(bos, add_special_tokens=False)["input_ids"]) if bos else 0
    n_special += len(tokenizer(suffix + eos, add_special_tokens=False)["input_ids"])
    prompts = []
    for i in range(n):
        prefix = ""
        k = int(rng.integers(0, max_examples + 1))
        if k > 0 and budget > 0:
            picked = rng.choice(n, size=min(k + 1, n), replace=False).tolist()
            for j in [j for j in picked if j != i][:k]:
                piece = ex_q[j] + suffix + ex_p[j] + "\n\n"
                if len(tokenizer(prefix + piece, add_special_tokens=False)["input_ids"]) > budget:
                    break
                prefix += piece
        prompts.append(prefix + queries[i])
    return [text + suffix for text in cut(prompts, query_max_len - n_special)]
