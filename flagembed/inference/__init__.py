"""Public inference classes and FlagEmbedding-compatible aliases."""

from flagembed.inference.compat import FlagAutoModel, FlagModel
from flagembed.inference.embedder import Embedder
from flagembed.inference.quantize import quantize

__all__ = ["Embedder", "FlagAutoModel", "FlagModel", "quantize"]
