"""Public inference classes and FlagEmbedding-compatible aliases."""

from flagembed.inference.compat import BGEM3FlagModel, FlagAutoModel, FlagModel
from flagembed.inference.embedder import Embedder
from flagembed.inference.m3 import M3Embedder
from flagembed.inference.m3_output import M3Output
from flagembed.inference.quantize import quantize

__all__ = ["BGEM3FlagModel", "Embedder", "FlagAutoModel", "FlagModel", "M3Embedder", "M3Output", "quantize"]
