"""Real libraries, real model, real data: LangChain's InMemoryVectorStore and LlamaIndex's VectorStoreIndex built
with our classes (all-MiniLM-L6-v2, 200 SciFact abstracts) retrieve each claim's gold abstract like Embedder does."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def minilm(minilm_path):
    from flagembed import Embedder

    return Embedder(minilm_path)


@pytest.fixture(scope="module")
def brute_force(minilm, scifact_subset):
    """Top-1 abstract per claim by exact search over Embedder's vectors (the reference)."""
    ids = list(scifact_subset["docs"])
    docs = minilm.encode_corpus(list(scifact_subset["docs"].values()))
    claims = scifact_subset["claims"]
    q = minilm.encode_queries(list(claims.values()))
    top = np.argmax(q @ docs.T, axis=1)
    return {qid: ids[i] for qid, i in zip(claims, top)}, dict(zip(ids, docs))


def _check(found: dict[str, str], brute_force, scifact_subset):
    gold = scifact_subset["gold"]
    assert found == brute_force[0]  # the store ranks exactly like our own exact search
    hits = sum(found[q] == gold[q] for q in gold)
    assert hits >= 5, f"{hits}/{len(gold)} claims found their abstract"  # 6 of 8 measured on CPU fp32


def test_langchain_in_memory_vector_store(minilm, scifact_subset, brute_force):
    from langchain_core.vectorstores import InMemoryVectorStore

    from flagembed.integrations.langchain import FlagembedEmbeddings

    store = InMemoryVectorStore(FlagembedEmbeddings(minilm))
    ids = list(scifact_subset["docs"])
    store.add_texts(list(scifact_subset["docs"].values()), ids=ids)
    for doc_id in ids[:20]:
        np.testing.assert_allclose(store.store[doc_id]["vector"], brute_force[1][doc_id], atol=1e-5)
    found = {q: store.similarity_search(c, k=1)[0].id for q, c in scifact_subset["claims"].items()}
    _check(found, brute_force, scifact_subset)


def test_llama_index_vector_store_index(minilm, scifact_subset, brute_force):
    from llama_index.core import VectorStoreIndex
    from llama_index.core.schema import TextNode

    from flagembed.integrations.llama_index import FlagembedEmbedding

    nodes = [TextNode(text=t, id_=i) for i, t in scifact_subset["docs"].items()]
    index = VectorStoreIndex(nodes, embed_model=FlagembedEmbedding(minilm), show_progress=False)
    stored = index.vector_store.get(nodes[0].node_id)
    np.testing.assert_allclose(stored, brute_force[1][nodes[0].node_id], atol=1e-5)
    retriever = index.as_retriever(similarity_top_k=1)
    found = {q: retriever.retrieve(c)[0].node.node_id for q, c in scifact_subset["claims"].items()}
    _check(found, brute_force, scifact_subset)
