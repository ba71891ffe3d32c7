"""Vision side of Visualized-BGE: the EVA02 tower, image preprocessing, and the image+text sequence model."""

from flagembed.models.vision.eva import EVA02_B16, EVA02_L14, EvaConfig, EvaVisionTower, infer_config, rope_tables
from flagembed.models.vision.preprocess import (
    CLIP_MEAN,
    CLIP_STD,
    ImageError,
    ImageTooLargeError,
    decode_data_url,
    load_image,
    preprocess,
    preprocess_batch,
)

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "EVA02_B16",
    "EVA02_L14",
    "EvaConfig",
    "EvaVisionTower",
    "ImageError",
    "ImageTooLargeError",
    "decode_data_url",
    "infer_config",
    "load_image",
    "preprocess",
    "preprocess_batch",
    "rope_tables",
]
