"""RetroMAE batches: encoder inputs masked by whole words, the original ids, decoder matrix masks and labels."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from flagembed.train.retromae.masking import decoder_labels, decoder_matrix_mask, mlm_corrupt, whole_word_mask


class RetroMAECollator:
    """Tokenize ``{"text": str}`` items (fast tokenizer, right padding) into a RetroMAE training batch.

    Keys: ``input_ids`` / ``attention_mask`` (original), ``encoder_input_ids`` / ``encoder_labels`` (whole-word
    masked at ``encoder_mlm_probability``, 80/10/10), ``decoder_attention`` ``(B, L, L)`` bool (row-wise masks at
    ``decoder_mlm_probability``), ``decoder_labels``.

    Raises:
        ValueError: a slow tokenizer (no word ids) or one without a mask token.
    """

    def __init__(
        self,
        tokenizer: Any,
        max_seq_length: int = 512,
        encoder_mlm_probability: float = 0.3,
        decoder_mlm_probability: float = 0.5,
        seed: int = 0,
    ) -> None:
        if not getattr(tokenizer, "is_fast", False):
            raise ValueError("RetroMAE whole-word masking needs a fast tokenizer (word ids)")
        if tokenizer.mask_token_id is None:
            raise ValueError("RetroMAE needs a tokenizer with a mask token")
        for name, p in (("encoder_mlm_probability", encoder_mlm_probability), ("decoder_mlm_probability",
                                                                                 decoder_mlm_probability)):
            if not 0.0 < p < 1.0:
                raise ValueError(f"{name} must be in (0, 1), got {p}")
        self.tokenizer = tokenizer
        self.max_seq_length = max_seq_length
        self.enc_p = encoder_mlm_probability
        self.dec_p = decoder_mlm_probability
        self.rng = np.random.default_rng(seed)
        self.gen = torch.Generator().manual_seed(seed)

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Collate items into a batch (see the class docstring)."""
        texts = [f["text"] for f in features]
        enc = self.tokenizer(texts, truncation=True, max_length=self.max_seq_length, padding=True, return_tensors="pt")
        ids, attn = enc["input_ids"], enc["attention_mask"]
        bsz, length = ids.shape
        enc_mask = torch.zeros(bsz, length, dtype=torch.bool)
        allowed = torch.zeros(bsz, length, length, dtype=torch.bool)
        for i in range(bsz):
            n = int(attn[i].sum())
            word_ids = enc.word_ids(i)[:n]
            enc_mask[i, :n] = torch.from_numpy(whole_word_mask(word_ids, self.enc_p, self.rng))
            allowed[i] = torch.from_numpy(decoder_matrix_mask(word_ids, length, self.dec_p, self.rng))
        vocab = len(self.tokenizer)
        enc_ids, enc_labels = mlm_corrupt(ids, enc_mask, int(self.tokenizer.mask_token_id), vocab, self.gen)
        return {
            "input_ids": ids,
            "attention_mask": attn,
            "encoder_input_ids": enc_ids,
            "encoder_labels": enc_labels,
            "decoder_attention": allowed,
            "decoder_labels": decoder_labels(ids, attn),
        }
