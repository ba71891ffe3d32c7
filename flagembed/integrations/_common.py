"""What both adapters share: building flagembed models from names or instances, vectors as float lists."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

EXTRAS = {"langchain": ("langchain-core", "langchain"), "llama_index": ("llama-index-core", "llama-index")}


def missing(library: str, exc: ImportError) -> ImportError:
    """The ImportError raised when an adapter's library is absent, with the install line."""
    package, extra = EXTRAS[library]
    return ImportError(f'flagembed.integrations.{library} needs {package}: pip install "flagembed[{extra}]" ({exc})')


def make_embedder(model: Any, embedder_kwargs: Mapping[str, Any]) -> Any:
    """An embedder instance: ``model`` itself when it has ``encode_queries``/``encode_corpus``, else loaded by name.

    Names (hub ids, local folders, packaged models) load with the registry's class (``M3Embedder`` for
    BGE-M3) and ``embedder_kwargs`` passed on (``device``, ``local_files_only``, ``query_instruction``...).

    Raises:
        TypeError: ``model`` is neither a name/path nor an embedder; kwargs given with an instance.
    """
    if hasattr(model, "encode_queries") and hasattr(model, "encode_corpus"):
        if embedder_kwargs:
            raise TypeError(f"embedder options {sorted(embedder_kwargs)} apply only when the model is given by name")
        return model
    if not isinstance(model, str) and not hasattr(model, "__fspath__"):
        raise TypeError(f"model must be a name, a path or a flagembed embedder, got {type(model).__name__}")
    from flagembed.evaluate.jobs import load_embedder

    return load_embedder(str(model), **dict(embedder_kwargs))


def make_reranker(model: Any, reranker_kwargs: Mapping[str, Any]) -> Any:
    """A reranker instance (anything with ``rerank``), or one loaded by name with the registry's class."""
    if hasattr(model, "rerank") and hasattr(model, "compute_score"):
        if reranker_kwargs:
            raise TypeError(f"reranker options {sorted(reranker_kwargs)} apply only when the model is given by name")
        return model
    if not isinstance(model, str) and not hasattr(model, "__fspath__"):
        raise TypeError(f"model must be a name, a path or a flagembed reranker, got {type(model).__name__}")
    from flagembed.evaluate.jobs import load_reranker

    return load_reranker(str(model), **dict(reranker_kwargs))


def as_rows(vectors: Any) -> np.ndarray:
    """Dense vectors as a 2-D float32 array (M3 outputs give their dense part)."""
    if hasattr(vectors, "dense") and not hasattr(vectors, "shape"):
        vectors = vectors.dense
    if isinstance(vectors, Mapping):
        vectors = vectors["dense_vecs"]
    if hasattr(vectors, "detach"):
        vectors = vectors.detach().cpu().numpy()
    arr = np.asarray(vectors, dtype=np.float32)
    return arr[None, :] if arr.ndim == 1 else arr


class Encoder:
    """Calls ``encode_corpus`` / ``encode_queries`` with fixed kwargs; one call at a time per embedder.

    A whole list goes to the embedder in one call, so the engine batches it (length-sorted, token budget).
    The lock lets async callers run encodings in worker threads without two touching the model at once.
    """

    def __init__(self, embedder: Any, encode_kwargs: Mapping[str, Any] | None = None) -> None:
        self.embedder = embedder
        self.encode_kwargs = dict(encode_kwargs or {})
        self._lock = threading.Lock()

    def documents(self, texts: Sequence[str]) -> list[list[float]]:
        """Passage vectors (with the model's passage instruction, if any)."""
        texts = _check_texts(texts)
        if not texts:
            return []
        with self._lock:
            out = self.embedder.encode_corpus(texts, **self.encode_kwargs)
        return as_rows(out).tolist()

    def queries(self, texts: Sequence[str]) -> list[list[float]]:
        """Query vectors (with the model's query instruction)."""
        texts = _check_texts(texts)
        if not texts:
            return []
        with self._lock:
            out = self.embedder.encode_queries(texts, **self.encode_kwargs)
        return as_rows(out).tolist()


def _check_texts(texts: Any) -> list[str]:
    if isinstance(texts, str):
        raise TypeError("expected a list of texts, got a single string")
    out = list(texts)
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise TypeError(f"texts[{i}] must be a string, got {type(t).__name__}")
    return out
