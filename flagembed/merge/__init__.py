"""LM-Cocktail model merging: by weights, by a few examples, and tensor by tensor for big models."""

from flagembed.merge.cocktail import (
    MODEL_TYPES,
    DataMix,
    check_compatible,
    check_weights,
    load_merged,
    merge_tensor,
    mix_models,
    mix_models_by_layers,
    mix_models_with_data,
)
from flagembed.merge.losses import example_losses, loss_weights

__all__ = [
    "MODEL_TYPES",
    "DataMix",
    "check_compatible",
    "check_weights",
    "example_losses",
    "load_merged",
    "loss_weights",
    "merge_tensor",
    "mix_models",
    "mix_models_by_layers",
    "mix_models_with_data",
]
