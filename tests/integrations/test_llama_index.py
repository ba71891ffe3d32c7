"""LlamaIndex adapters: the BaseEmbedding contract and the node postprocessor reranking as Reranker.rerank."""

from __future__ import annotations

import asyncio
import importlib
import sys

import numpy as np
import pytest

pytest.importorskip("llama_index.core")

from llama_index.core.schema import NodeWithScore, TextNode  # noqa: E402

from flagembed import Embedder, Reranker  # noqa: E402
from flagembed.integrations.llama_index import FlagembedEmbedding, FlagembedRerank  # noqa: E402

TEXTS = ["the giant panda is a bear", "bm25 ranks by term frequency", "dense vectors", "a longer passage " * 20]
QUERY = "what is a panda?"


@pytest.fixture(scope="module")
def ref(tiny_bert) -> Embedder:
    return Embedder(tiny_bert, query_instruction="query: ")


def test_vectors_equal_embedder(tiny_bert, ref):
    emb = FlagembedEmbedding(tiny_bert, query_instruction="query: ")
    assert emb.embed_batch_size == ref.batch_size  # one engine call per LlamaIndex chunk
    np.testing.assert_allclose(emb.get_text_embedding_batch(TEXTS), ref.encode_corpus(TEXTS), atol=1e-6)
    np.testing.assert_allclose(emb.get_text_embedding(TEXTS[0]), ref.encode_corpus(TEXTS[0]), atol=1e-6)
    np.testing.assert_allclose(emb.get_query_embedding(QUERY), ref.encode_queries(QUERY), atol=1e-6)
    assert not np.allclose(emb.get_query_embedding(QUERY), emb.get_text_embedding(QUERY), atol=1e-4)

    async def run():
        return await asyncio.gather(emb.aget_query_embedding(QUERY), emb.aget_text_embedding_batch(TEXTS))

    q, docs = asyncio.run(run())
    np.testing.assert_allclose(q, emb.get_query_embedding(QUERY), atol=1e-6)
    np.testing.assert_allclose(docs, ref.encode_corpus(TEXTS), atol=1e-6)


def test_instance_and_encode_kwargs(ref):
    emb = FlagembedEmbedding(ref, embed_batch_size=2, encode_kwargs={"max_length": 4})
    assert emb.embedder is ref and emb.embed_batch_size == 2
    np.testing.assert_allclose(emb.get_text_embedding_batch(TEXTS), ref.encode_corpus(TEXTS, max_length=4), atol=1e-6)
    with pytest.raises(TypeError, match="only when the model is given by name"):
        FlagembedEmbedding(ref, device="cpu")


def test_postprocessor_orders_as_reranker_rerank(tiny_cross_encoder):
    rr = Reranker(tiny_cross_encoder)
    nodes = [NodeWithScore(node=TextNode(text=t, id_=f"n{i}"), score=0.1 * i) for i, t in enumerate(TEXTS)]
    post = FlagembedRerank(rr, top_n=2, keep_retrieval_score=True)
    got = post.postprocess_nodes(nodes, query_str=QUERY)
    want = rr.rerank(QUERY, TEXTS, top_k=2)
    assert [n.node.node_id for n in got] == [f"n{r.index}" for r in want]
    assert [n.score for n in got] == pytest.approx([r.score for r in want])
    assert got[0].node.metadata["retrieval_score"] == pytest.approx(0.1 * want[0].index)
    again = asyncio.run(post.apostprocess_nodes(nodes, query_str=QUERY))  # the kept score is not reranked text
    assert [n.node.node_id for n in again] == [n.node.node_id for n in got]
    assert post.postprocess_nodes([], query_str=QUERY) == []
    with pytest.raises(ValueError, match="needs the query"):
        post.postprocess_nodes(nodes)
    all_nodes = FlagembedRerank(tiny_cross_encoder, top_n=None).postprocess_nodes(nodes, query_str=QUERY)
    assert len(all_nodes) == len(TEXTS)


def test_missing_library_gives_the_install_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "llama_index.core.base.embeddings.base", None)
    monkeypatch.delitem(sys.modules, "flagembed.integrations.llama_index", raising=False)
    with pytest.raises(ImportError, match=r'pip install "flagembed\[llama-index\]"'):
        importlib.import_module("flagembed.integrations.llama_index")
