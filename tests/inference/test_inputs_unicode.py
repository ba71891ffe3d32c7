"""Lone UTF-16 surrogates are a clear ValueError naming the item, before any tokenizer sees them."""

from __future__ import annotations

import pytest

from flagembed.inference.inputs import as_corpus_list, as_text_list
from flagembed.inference.reranker import as_pairs, rerank_with


def test_texts_with_a_lone_surrogate_name_the_index():
    with pytest.raises(ValueError, match=r"texts\[2\] has a lone UTF-16 surrogate at character 3"):
        as_text_list(["ok", "fine é", "bad\ud800"])
    with pytest.raises(ValueError, match=r"^queries has a lone"):
        as_text_list("\udc00", "queries")
    assert as_text_list(["emoji \U0001f600", "é"])[0] == ["emoji \U0001f600", "é"]


def test_corpus_pairs_and_rerank_documents():
    with pytest.raises(ValueError, match=r"corpus\[1\]\.title has a lone"):
        as_corpus_list(["a", {"title": "\ud800", "text": "t"}])
    with pytest.raises(ValueError, match=r"sentence_pairs\[1\] passage has a lone"):
        as_pairs([("q", "p"), ("q", "\ud800")])
    with pytest.raises(ValueError, match="sentence_pairs has a lone"):
        as_pairs(("\ud800", "p"))
    with pytest.raises(ValueError, match=r"corpus\[0\] has a lone"):
        rerank_with(lambda pairs: [0.0] * len(pairs), "q", ["\udfff"], None)
