"""LangChain adapters: the Embeddings contract (instructions, async, kwargs) and reranking as Reranker.rerank."""

from __future__ import annotations

import asyncio
import importlib
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("langchain_core")

from langchain_core.documents import Document  # noqa: E402

from flagembed import Embedder, Reranker  # noqa: E402
from flagembed.integrations.langchain import FlagembedEmbeddings, FlagembedReranker  # noqa: E402

TEXTS = ["the giant panda is a bear", "bm25 ranks by term frequency", "dense vectors", "a longer passage " * 20]
QUERY = "what is a panda?"


@pytest.fixture(scope="module")
def ref(tiny_bert) -> Embedder:
    return Embedder(tiny_bert, query_instruction="query: ")


@pytest.fixture(scope="module")
def emb(tiny_bert) -> FlagembedEmbeddings:
    return FlagembedEmbeddings(tiny_bert, query_instruction="query: ")


def test_vectors_equal_embedder_with_instructions(emb, ref):
    docs = emb.embed_documents(TEXTS)
    assert isinstance(docs, list) and isinstance(docs[0], list) and isinstance(docs[0][0], float)
    np.testing.assert_allclose(docs, ref.encode_corpus(TEXTS), atol=1e-6)
    q = emb.embed_query(QUERY)
    np.testing.assert_allclose(q, ref.encode_queries(QUERY), atol=1e-6)
    assert not np.allclose(q, ref.encode_corpus(QUERY), atol=1e-4)  # the query instruction was applied
    assert emb.embed_documents([]) == []


def test_async_variants_match_sync(emb):
    async def both():
        return await asyncio.gather(emb.aembed_documents(TEXTS), emb.aembed_query(QUERY), emb.aembed_query(QUERY))

    docs, q1, q2 = asyncio.run(both())
    np.testing.assert_allclose(docs, emb.embed_documents(TEXTS), atol=1e-6)
    np.testing.assert_allclose(q1, emb.embed_query(QUERY), atol=1e-6)
    assert q1 == q2


def test_kwargs_pass_through_and_instances(tiny_bert, ref):
    short = FlagembedEmbeddings(ref, encode_kwargs={"max_length": 4, "batch_size": 2})
    assert short.embedder is ref
    np.testing.assert_allclose(short.embed_documents(TEXTS), ref.encode_corpus(TEXTS, max_length=4), atol=1e-6)
    assert not np.allclose(short.embed_documents(TEXTS[-1:]), ref.encode_corpus(TEXTS[-1:]), atol=1e-4)
    with pytest.raises(TypeError, match="only when the model is given by name"):
        FlagembedEmbeddings(ref, device="cpu")
    with pytest.raises(TypeError, match="single string"):
        short.embed_documents("one text")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="model must be"):
        FlagembedEmbeddings(42)


def test_compressor_orders_as_reranker_rerank(tiny_cross_encoder):
    rr = Reranker(tiny_cross_encoder)
    docs = [Document(page_content=t, metadata={"i": i}, id=f"d{i}") for i, t in enumerate(TEXTS)]
    comp = FlagembedReranker(rr, top_n=3)
    got = comp.compress_documents(docs, QUERY)
    want = rr.rerank(QUERY, TEXTS, top_k=3)
    assert [d.page_content for d in got] == [TEXTS[r.index] for r in want]
    assert [d.metadata["relevance_score"] for d in got] == pytest.approx([r.score for r in want])
    assert [d.id for d in got] == [f"d{r.index}" for r in want] and got[0].metadata["i"] == want[0].index
    assert "relevance_score" not in docs[0].metadata  # inputs are not modified
    everything = FlagembedReranker(tiny_cross_encoder, top_n=None, normalize=True).compress_documents(docs, QUERY)
    assert len(everything) == len(TEXTS) and all(0 < d.metadata["relevance_score"] < 1 for d in everything)
    assert asyncio.run(comp.acompress_documents(docs, QUERY)) == got
    assert comp.compress_documents([], QUERY) == []


def test_missing_library_gives_the_install_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "langchain_core.embeddings", None)
    monkeypatch.delitem(sys.modules, "flagembed.integrations.langchain", raising=False)
    with pytest.raises(ImportError, match=r'pip install "flagembed\[langchain\]"'):
        importlib.import_module("flagembed.integrations.langchain")
    monkeypatch.undo()
    importlib.import_module("flagembed.integrations.langchain")


def test_import_flagembed_does_not_import_the_libraries():
    code = (
        "import sys, flagembed, flagembed.integrations as fi; "
        "assert not any(m.startswith(('langchain', 'llama_index')) for m in sys.modules), 'eager import'; "
        "fi.FlagembedEmbeddings; assert 'langchain_core' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
