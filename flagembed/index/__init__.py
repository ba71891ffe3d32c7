"""Retrieval indexes: dense (faiss), sparse (inverted, scipy), multi-vector (ColBERT), hybrid; persisted."""

from flagembed.index.dense import DenseIndex
from flagembed.index.docs import DocStore
from flagembed.index.hybrid import HybridSearcher, model_info
from flagembed.index.multivector import MultiVectorIndex
from flagembed.index.results import SearchResults
from flagembed.index.sparse import SparseIndex
from flagembed.index.storage import IndexFormatError, IndexMismatchError

__all__ = [
    "DenseIndex",
    "DocStore",
    "HybridSearcher",
    "IndexFormatError",
    "IndexMismatchError",
    "MultiVectorIndex",
    "SearchResults",
    "SparseIndex",
    "model_info",
]
