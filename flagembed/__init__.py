"""flagembed: embeddings, retrieval, reranking, evaluation and fine-tuning for BGE-style models."""

from flagembed.inference import (
    BGEM3FlagModel,
    Embedder,
    FlagAutoModel,
    FlagAutoReranker,
    FlagICLModel,
    FlagLLMModel,
    FlagLLMReranker,
    FlagModel,
    FlagPseudoMoEModel,
    FlagReranker,
    LayerWiseFlagLLMReranker,
    LayerwiseReranker,
    LightWeightFlagLLMReranker,
    LightweightReranker,
    LLMReranker,
    M3Embedder,
    Reranker,
    VisualEmbedder,
    Visualized_BGE,
    quantize,
)
from flagembed.models import ModelSpec, list_models, lookup

__version__ = "0.1.0"

__all__ = [
    "BGEM3FlagModel",
    "M3Embedder",
    "Embedder",
    "FlagAutoModel",
    "FlagModel",
    "ModelSpec",
    "__version__",
    "list_models",
    "lookup",
    "quantize",
]
__all__ += ["FlagICLModel", "FlagLLMModel", "FlagPseudoMoEModel"]  # decoder-only embedders
__all__ += [  # rerankers
    "FlagAutoReranker",
    "FlagLLMReranker",
    "FlagReranker",
    "LLMReranker",
    "LayerWiseFlagLLMReranker",
    "LayerwiseReranker",
    "LightWeightFlagLLMReranker",
    "LightweightReranker",
    "Reranker",
]
__all__ += ["VisualEmbedder", "Visualized_BGE"]  # Visualized-BGE
