"""LlamaIndex adapters: :class:`FlagembedEmbedding` (``BaseEmbedding``) and :class:`FlagembedRerank` (postprocessor).

Needs ``llama-index-core`` (``pip install "flagembed[llama-index]"``).

Example:
    >>> from llama_index.core import Document, VectorStoreIndex
    >>> from flagembed.integrations.llama_index import FlagembedEmbedding, FlagembedRerank
    >>> index = VectorStoreIndex.from_documents([Document(text="BGE is an embedding model.")],
    ...                                         embed_model=FlagembedEmbedding("BAAI/bge-small-en-v1.5"))
    >>> engine = index.as_retriever(similarity_top_k=20)
    >>> FlagembedRerank("BAAI/bge-reranker-base", top_n=3).postprocess_nodes(engine.retrieve("q"), query_str="q")
"""

from __future__ import annotations

import asyncio
from typing import Any

from flagembed.integrations._common import Encoder, make_embedder, make_reranker, missing

try:
    from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
    from llama_index.core.bridge.pydantic import Field, PrivateAttr
    from llama_index.core.postprocessor.types import BaseNodePostprocessor
    from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise missing("llama_index", exc) from exc

__all__ = ["FlagembedEmbedding", "FlagembedRerank"]


class FlagembedEmbedding(BaseEmbedding):
    """LlamaIndex ``BaseEmbedding`` over a flagembed embedder, with the model's query/passage instructions.

    Text (node) embeddings use ``Embedder.encode_corpus``, query embeddings ``encode_queries``. LlamaIndex
    hands texts over in chunks of ``embed_batch_size`` (default: the embedder's batch size, so one engine
    call per chunk, batched by the engine); async methods run the encoding in a worker thread.

    Args:
        model: a model name / hub id / local folder, or a ready ``Embedder`` / ``M3Embedder``.
        embed_batch_size: texts per call LlamaIndex makes (default: the embedder's ``batch_size``).
        encode_kwargs: passed to every encode call.
        **embedder_kwargs: passed to ``Embedder(...)`` when ``model`` is a name.
    """

    encode_kwargs: dict[str, Any] = Field(default_factory=dict, description="kwargs for every encode call")
    _embedder: Any = PrivateAttr()
    _encoder: Any = PrivateAttr()

    def __init__(
        self,
        model: Any = "all-MiniLM-L6-v2",
        *,
        embed_batch_size: int | None = None,
        encode_kwargs: dict[str, Any] | None = None,
        **embedder_kwargs: Any,
    ) -> None:
        embedder = make_embedder(model, embedder_kwargs)
        settings = getattr(embedder, "settings", None)
        name = str(getattr(settings, "name", None) or (model if isinstance(model, str) else type(model).__name__))
        batch = embed_batch_size or int(getattr(embedder, "batch_size", 256) or 256)
        super().__init__(model_name=name, embed_batch_size=batch, encode_kwargs=dict(encode_kwargs or {}))
        self._embedder = embedder
        self._encoder = Encoder(embedder, self.encode_kwargs)

    @classmethod
    def class_name(cls) -> str:
        return "FlagembedEmbedding"

    @property
    def embedder(self) -> Any:
        """The flagembed embedder doing the encoding."""
        return self._embedder

    def _get_query_embedding(self, query: str) -> Embedding:
        return self._encoder.queries([query])[0]

    def _get_text_embedding(self, text: str) -> Embedding:
        return self._encoder.documents([text])[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return self._encoder.documents(texts)

    async def _aget_query_embedding(self, query: str) -> Embedding:
        return await asyncio.to_thread(self._get_query_embedding, query)

    async def _aget_text_embedding(self, text: str) -> Embedding:
        return await asyncio.to_thread(self._get_text_embedding, text)

    async def _aget_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return await asyncio.to_thread(self._get_text_embeddings, texts)


class FlagembedRerank(BaseNodePostprocessor):
    """A LlamaIndex node postprocessor that reorders nodes with a flagembed reranker.

    Nodes come back best first, cut to ``top_n``, scored by ``Reranker.rerank`` on each node's embed-mode
    content; with ``keep_retrieval_score`` the old score is kept in ``metadata["retrieval_score"]``.

    Args:
        model: a reranker name / folder, or a ready reranker.
        top_n: nodes to keep (``None`` keeps all).
        normalize: sigmoid the scores (``None``: the reranker's own setting).
        **reranker_kwargs: passed to the reranker constructor when ``model`` is a name.
    """

    top_n: int | None = Field(default=3, description="nodes to keep; None keeps all")
    normalize: bool | None = Field(default=None, description="sigmoid the scores")
    keep_retrieval_score: bool = Field(default=False, description="keep the retrieval score in metadata")
    _reranker: Any = PrivateAttr()

    def __init__(
        self,
        model: Any,
        *,
        top_n: int | None = 3,
        normalize: bool | None = None,
        keep_retrieval_score: bool = False,
        **reranker_kwargs: Any,
    ) -> None:
        if top_n is not None and top_n < 0:
            raise ValueError(f"top_n must be >= 0 or None, got {top_n}")
        super().__init__(top_n=top_n, normalize=normalize, keep_retrieval_score=keep_retrieval_score)
        self._reranker = make_reranker(model, reranker_kwargs)

    @classmethod
    def class_name(cls) -> str:
        return "FlagembedRerank"

    @property
    def reranker(self) -> Any:
        """The flagembed reranker doing the scoring."""
        return self._reranker

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        if query_bundle is None:
            raise ValueError("FlagembedRerank needs the query: pass query_str= or query_bundle=")
        if not nodes:
            return []
        texts = [n.node.get_content(metadata_mode=MetadataMode.EMBED) for n in nodes]
        kwargs = {} if self.normalize is None else {"normalize": self.normalize}
        ranked = self._reranker.rerank(query_bundle.query_str, texts, top_k=self.top_n, **kwargs)
        out = []
        for r in ranked:
            node = nodes[r.index]
            if self.keep_retrieval_score:  # kept out of the embed text, so a second rerank sees the same text
                node.node.metadata["retrieval_score"] = node.score
                if "retrieval_score" not in node.node.excluded_embed_metadata_keys:
                    node.node.excluded_embed_metadata_keys.append("retrieval_score")
            out.append(NodeWithScore(node=node.node, score=r.score))
        return out
