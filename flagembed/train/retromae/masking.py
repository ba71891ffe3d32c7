"""RetroMAE masking: whole-word masks from word ids, MLM corruption, the decoder's per-row matrix masks.

Whole words come from the fast tokenizer's ``word_ids`` (``None`` for special tokens), so the same code
serves WordPiece (``##`` pieces), SentencePiece (``▁`` word starts) and byte-level BPE (``Ġ``); HF's
``DataCollatorForWholeWordMask`` only understands ``##`` and changed its private API in transformers 5
(WAVE2_REFERENCE.md §3.d), so nothing of it is used here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def word_spans(word_ids: Sequence[int | None]) -> list[list[int]]:
    """Token positions of each word, in order; special tokens (``None``) belong to no word."""
    spans: list[list[int]] = []
    last = None
    for pos, wid in enumerate(word_ids):
        if wid is None:
            last = None
            continue
        if wid != last:
            spans.append([])
            last = wid
        spans[-1].append(pos)
    return spans


def whole_word_mask(word_ids: Sequence[int | None], probability: float, rng: np.random.Generator) -> np.ndarray:
    """Bool mask over positions: whole words in random order until ``round(probability * tokens)`` are covered.

    At least one word is masked when the text has any (as HF's whole-word collator); a word that would
    overshoot the budget is skipped. Special tokens are never masked.
    """
    spans = word_spans(word_ids)
    mask = np.zeros(len(word_ids), dtype=bool)
    n_tokens = sum(len(s) for s in spans)
    if not spans or probability <= 0:
        return mask
    budget = max(1, int(round(n_tokens * probability)))
    covered = 0
    for i in rng.permutation(len(spans)):
        span = spans[i]
        if covered >= budget:
            break
        if covered + len(span) > budget and covered > 0:
            continue
        mask[span] = True
        covered += len(span)
    return mask


def mlm_corrupt(
    input_ids: torch.Tensor, mask: torch.Tensor, mask_token_id: int, vocab_size: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's 80/10/10 corruption of the masked positions; returns ``(inputs, labels)`` (labels -100 elsewhere)."""
    labels = input_ids.masked_fill(~mask, -100)
    inputs = input_ids.clone()
    roll = torch.rand(input_ids.shape, generator=generator)
    to_mask = mask & (roll < 0.8)
    to_random = mask & (roll >= 0.8) & (roll < 0.9)
    inputs[to_mask] = mask_token_id
    random_ids = torch.randint(vocab_size, input_ids.shape, generator=generator, dtype=input_ids.dtype)
    inputs[to_random] = random_ids[to_random]
    return inputs, labels


def decoder_matrix_mask(
    word_ids: Sequence[int | None],
    length: int,
    probability: float,
    rng: np.random.Generator,
    n_masks: int = 128,
) -> np.ndarray:
    """The enhanced decoder's ``(length, length)`` allowed-attention matrix for one text (True = visible).

    Row ``i`` takes one of up to ``n_masks`` sampled whole-word masks (at ``probability``): its masked
    columns are hidden, and so is column ``i`` itself; padding columns (beyond ``len(word_ids)``) are
    hidden. Special tokens are in no whole-word mask, so the CLS column stays visible to every other row.
    """
    n = len(word_ids)
    masks = [whole_word_mask(word_ids, probability, rng) for _ in range(max(1, min(n_masks, n)))]
    choice = rng.integers(len(masks), size=n)
    allowed = np.zeros((length, length), dtype=bool)
    for i in range(n):
        allowed[i, :n] = ~masks[choice[i]]
        allowed[i, i] = False
    return allowed


def decoder_labels(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Every real token is a decoder target except each text's first and last (CLS/SEP); padding is -100."""
    labels = input_ids.masked_fill(attention_mask == 0, -100)
    labels[:, 0] = -100
    last = attention_mask.long().sum(dim=1) - 1
    labels[torch.arange(len(labels)), last.clamp_min(0)] = -100
    return labels
