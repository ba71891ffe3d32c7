"""Public inference classes and FlagEmbedding-compatible aliases."""

from flagembed.inference.compat import (
    BGEM3FlagModel,
    FlagAutoModel,
    FlagAutoReranker,
    FlagICLModel,
    FlagLLMModel,
    FlagLLMReranker,
    FlagModel,
    FlagPseudoMoEModel,
    FlagReranker,
    LayerWiseFlagLLMReranker,
    LightWeightFlagLLMReranker,
    Visualized_BGE,
)
from flagembed.inference.embedder import Embedder
from flagembed.inference.layerwise import LayerwiseReranker
from flagembed.inference.lightweight import LightweightReranker
from flagembed.inference.llm_reranker import LLMReranker
from flagembed.inference.m3 import M3Embedder
from flagembed.inference.m3_output import M3Output
from flagembed.inference.quantize import quantize
from flagembed.inference.reranker import Reranker, RerankResult
from flagembed.inference.visual import ImageBatchError, VisualEmbedder

__all__ = ["BGEM3FlagModel", "Embedder", "FlagAutoModel", "FlagModel", "M3Embedder", "M3Output", "quantize"]
__all__ += ["FlagICLModel", "FlagLLMModel", "FlagPseudoMoEModel"]  # decoder-only
__all__ += [  # rerankers
    "FlagAutoReranker",
    "FlagLLMReranker",
    "FlagReranker",
    "LLMReranker",
    "LayerWiseFlagLLMReranker",
    "LayerwiseReranker",
    "LightWeightFlagLLMReranker",
    "LightweightReranker",
    "RerankResult",
    "Reranker",
]
__all__ += ["ImageBatchError", "VisualEmbedder", "Visualized_BGE"]  # Visualized-BGE
