"""RetroMAE pre-training (Xiao et al. 2022): whole-word-masked encoder MLM + one-layer enhanced decoder."""

from flagembed.train.retromae.collator import RetroMAECollator
from flagembed.train.retromae.masking import decoder_labels, decoder_matrix_mask, whole_word_mask, word_spans
from flagembed.train.retromae.model import EnhancedDecoderLayer, RetroMAEModel
from flagembed.train.retromae.pretrain import (
    RetroMAEArguments,
    RetroMAEResult,
    parse_retromae_args,
    pretrain_retromae,
)

__all__ = [
    "EnhancedDecoderLayer",
    "RetroMAEArguments",
    "RetroMAECollator",
    "RetroMAEModel",
    "RetroMAEResult",
    "decoder_labels",
    "decoder_matrix_mask",
    "parse_retromae_args",
    "pretrain_retromae",
    "whole_word_mask",
    "word_spans",
]
