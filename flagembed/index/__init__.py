"""Retrieval indexes: dense (faiss), sparse (inverted, scipy), multi-vector (ColBERT), BM25, hybrid; persisted."""

from flagembed.index.bm25 import BM25Index, BM25Tokenizer
from flagembed.index.dense import DenseIndex
from flagembed.index.docs import DocStore
from flagembed.index.hybrid import HybridSearcher, model_info
from flagembed.index.multivector import MultiVectorIndex
from flagembed.index.results import SearchResults
from flagembed.index.sparse import SparseIndex
from flagembed.index.storage import IndexFormatError, IndexMismatchError

__all__ = [
    "BM25Index",
    "BM25Tokenizer",
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
