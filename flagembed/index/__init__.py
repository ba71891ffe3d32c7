"""Retrieval indexes: dense (faiss), sparse (inverted, scipy), multi-vector (ColBERT), hybrid; persisted."""

from flagembed.index.dense import DenseIndex
from flagembed.index.results import SearchResults
from flagembed.index.storage import IndexFormatError, IndexMismatchError

__all__ = ["DenseIndex", "IndexFormatError", "IndexMismatchError", "SearchResults"]
