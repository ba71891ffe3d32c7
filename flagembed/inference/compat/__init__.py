"""FlagEmbedding-compatible names and argument spellings, mapped onto flagembed's classes.

Switch by changing the import: ``from flagembed import FlagModel`` instead of
``from FlagEmbedding import FlagModel``. Differences from the reference (all deliberate):
outputs are float32 even under fp16; half precision is ignored on CPU; several ``devices`` run one
worker process each, for the embedders, M3 and the rerankers alike (errors re-raised, a dead worker fails the call).
"""

from flagembed.inference.compat.decoders import FlagICLModel, FlagLLMModel, FlagPseudoMoEModel
from flagembed.inference.compat.embedders import BGEM3FlagModel, FlagAutoModel, FlagModel
from flagembed.inference.compat.rerankers import (
    FlagAutoReranker,
    FlagLLMReranker,
    FlagReranker,
    LayerWiseFlagLLMReranker,
    LightWeightFlagLLMReranker,
)
from flagembed.inference.compat.visual import Visualized_BGE

__all__ = [
    "BGEM3FlagModel",
    "FlagAutoModel",
    "FlagAutoReranker",
    "FlagICLModel",
    "FlagLLMModel",
    "FlagLLMReranker",
    "FlagModel",
    "FlagPseudoMoEModel",
    "FlagReranker",
    "LayerWiseFlagLLMReranker",
    "LightWeightFlagLLMReranker",
    "Visualized_BGE",
]
