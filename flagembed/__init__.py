"""flagembed: embeddings, retrieval, reranking, evaluation and fine-tuning for BGE-style models."""

from flagembed.inference import Embedder, FlagAutoModel, FlagModel, quantize
from flagembed.models import ModelSpec, list_models, lookup

__version__ = "0.1.0"

__all__ = [
    "Embedder",
    "FlagAutoModel",
    "FlagModel",
    "ModelSpec",
    "__version__",
    "list_models",
    "lookup",
    "quantize",
]
