"""LangChain adapters: :class:`FlagembedEmbeddings` (``Embeddings``) and :class:`FlagembedReranker` (a compressor).

Needs ``langchain-core`` (``pip install "flagembed[langchain]"``).

Example:
    >>> from langchain_core.vectorstores import InMemoryVectorStore
    >>> from flagembed.integrations.langchain import FlagembedEmbeddings, FlagembedReranker
    >>> store = InMemoryVectorStore(FlagembedEmbeddings("BAAI/bge-small-en-v1.5"))
    >>> store.add_texts(["BGE is an embedding model.", "Pandas eat bamboo."])
    >>> store.similarity_search("what is BGE?", k=1)
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from flagembed.integrations._common import Encoder, make_embedder, make_reranker, missing

try:
    from langchain_core.callbacks import Callbacks
    from langchain_core.documents import BaseDocumentCompressor, Document
    from langchain_core.embeddings import Embeddings
    from pydantic import ConfigDict, PrivateAttr
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise missing("langchain", exc) from exc

__all__ = ["FlagembedEmbeddings", "FlagembedReranker"]


class FlagembedEmbeddings(Embeddings):
    """LangChain ``Embeddings`` over a flagembed embedder, with the model's query/passage instructions.

    ``embed_documents`` calls ``Embedder.encode_corpus`` and ``embed_query`` calls ``encode_queries``
    (so BGE models get their retrieval instruction on queries only), each with the whole list in one
    call: the engine batches it. Models load offline from local folders, the HF cache or the packaged
    ``all-MiniLM-L6-v2``.

    Args:
        model: a model name / hub id / local folder, or a ready ``Embedder`` / ``M3Embedder``.
        encode_kwargs: passed to every encode call (e.g. ``{"batch_size": 64, "max_length": 256}``).
        **embedder_kwargs: passed to ``Embedder(...)`` when ``model`` is a name (``device``, ``dtype``,
            ``query_instruction``, ``local_files_only``, ``trust_remote_code``...).
    """

    def __init__(
        self, model: Any = "all-MiniLM-L6-v2", *, encode_kwargs: dict[str, Any] | None = None, **embedder_kwargs: Any
    ) -> None:
        self.embedder = make_embedder(model, embedder_kwargs)
        self._encoder = Encoder(self.embedder, encode_kwargs)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Passage vectors, one list of floats per text."""
        return self._encoder.documents(texts)

    def embed_query(self, text: str) -> list[float]:
        """The query vector (with the model's query instruction)."""
        if not isinstance(text, str):
            raise TypeError(f"query must be a string, got {type(text).__name__}")
        return self._encoder.queries([text])[0]

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        """:meth:`embed_documents` in a worker thread (the event loop stays free while the model runs)."""
        return await asyncio.to_thread(self.embed_documents, texts)

    async def aembed_query(self, text: str) -> list[float]:
        """:meth:`embed_query` in a worker thread."""
        return await asyncio.to_thread(self.embed_query, text)


class FlagembedReranker(BaseDocumentCompressor):
    """A LangChain document compressor that reorders documents with a flagembed reranker.

    Documents come back best first, cut to ``top_n``, as copies with ``metadata["relevance_score"]``;
    the order is exactly ``Reranker.rerank(query, [d.page_content ...])``.

    Args:
        model: a reranker name / folder (loaded with the registry's reranker class), or a ready reranker.
        top_n: documents to keep (``None`` keeps all).
        normalize: sigmoid the scores (``None``: the reranker's own setting).
        **reranker_kwargs: passed to the reranker constructor when ``model`` is a name.

    Example:
        >>> comp = FlagembedReranker("BAAI/bge-reranker-base", top_n=3)
        >>> comp.compress_documents(store.similarity_search(query, k=20), query)  # or as a retriever compressor
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    top_n: int | None = 3
    normalize: bool | None = None
    _reranker: Any = PrivateAttr()

    def __init__(
        self, model: Any, *, top_n: int | None = 3, normalize: bool | None = None, **reranker_kwargs: Any
    ) -> None:
        if top_n is not None and top_n < 0:
            raise ValueError(f"top_n must be >= 0 or None, got {top_n}")
        super().__init__(top_n=top_n, normalize=normalize)
        self._reranker = make_reranker(model, reranker_kwargs)

    @property
    def reranker(self) -> Any:
        """The flagembed reranker doing the scoring."""
        return self._reranker

    def compress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        """The documents reordered by relevance to ``query`` (best first, at most ``top_n``)."""
        docs = list(documents)
        if not docs:
            return []
        kwargs = {} if self.normalize is None else {"normalize": self.normalize}
        ranked = self._reranker.rerank(query, [d.page_content for d in docs], top_k=self.top_n, **kwargs)
        out = []
        for r in ranked:
            doc = docs[r.index]
            out.append(
                Document(
                    page_content=doc.page_content, metadata={**doc.metadata, "relevance_score": r.score}, id=doc.id
                )
            )
        return out
