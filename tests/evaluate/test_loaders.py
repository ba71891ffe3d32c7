"""Retrieval and pair loaders: BEIR and FlagEmbedding layouts, bad judgements counted, clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from tiny_eval import DOCS

from flagembed.evaluate import load_pairs, load_retrieval


def test_beir_layout_keeps_judged_queries_and_counts_bad_qrels(beir_dir):
    data = load_retrieval(beir_dir, "test")
    assert list(data.queries) == ["q1", "q2", "q3"]  # q9 has no judgements in the split
    assert data.qrels == {"q1": {"d1": 1}, "q2": {"d2": 2, "d4": 1}, "q3": {"d5": 1}}
    assert data.stats["unknown_doc_qrels"] == 1 and data.stats["unknown_query_qrels"] == 1
    assert data.stats["queries_without_qrels"] == 1
    assert len(data.corpus) == len(DOCS)
    texts = dict(zip(data.doc_ids(), data.doc_texts()))
    assert texts["d1"] == "Cats cats purr and sleep on warm windows"
    assert texts["d4"] == "the stock market rose after the announcement"  # empty title: no leading space


def test_flagembedding_layout(tmp_path):
    with open(tmp_path / "corpus.jsonl", "w") as f:
        f.write(json.dumps({"id": "a", "title": "", "text": "alpha"}) + "\n")
        f.write(json.dumps({"id": "b", "title": "B", "text": "beta"}) + "\n")
    with open(tmp_path / "dev_queries.jsonl", "w") as f:
        f.write(json.dumps({"id": "1", "text": "first"}) + "\n")
    with open(tmp_path / "dev_qrels.jsonl", "w") as f:
        f.write(json.dumps({"qid": "1", "docid": "b", "relevance": 1}) + "\n")
    data = load_retrieval(tmp_path, "dev")
    assert data.queries == {"1": "first"} and data.qrels == {"1": {"b": 1}}


def test_missing_split_and_empty_split_errors(beir_dir):
    with pytest.raises(FileNotFoundError, match="found: test.tsv"):
        load_retrieval(beir_dir, "train")
    (beir_dir / "qrels" / "dev.tsv").write_text("query-id\tcorpus-id\tscore\nnope\td1\t1\n")
    with pytest.raises(ValueError, match="no usable judgements"):
        load_retrieval(beir_dir, "dev")


def test_fingerprint_changes_with_text(beir_dir):
    a = load_retrieval(beir_dir).fingerprint()
    text = (beir_dir / "corpus.jsonl").read_text().replace("warm", "cold")
    (beir_dir / "corpus.jsonl").write_text(text)
    assert load_retrieval(beir_dir).fingerprint() != a


def test_pairs_tsv_jsonl_and_folder(tmp_path):
    (tmp_path / "a.tsv").write_text("id\tsentence1\tsentence2\tscore\textra\n1\tx\ty\t4.5\tE\n2\tu\tv\t1\tN\n")
    (tmp_path / "b.jsonl").write_text(json.dumps({"sentence1": "p", "sentence2": "q", "label": 1}) + "\n")
    one = load_pairs(tmp_path / "a.tsv")
    assert one.sentence1 == ["x", "u"] and np.allclose(one.scores, [4.5, 1.0])
    both = load_pairs(tmp_path)
    assert len(both) == 3 and both.sentence2[-1] == "q"


def test_pairs_bad_rows(tmp_path):
    (tmp_path / "bad.tsv").write_text("sentence1\tsentence2\n1\t2\n")
    with pytest.raises(ValueError, match="row 0 lacks"):
        load_pairs(tmp_path / "bad.tsv")
    (tmp_path / "nan.tsv").write_text("sentence1\tsentence2\tscore\na\tb\thigh\n")
    with pytest.raises(ValueError, match="non-numeric score"):
        load_pairs(tmp_path / "nan.tsv")


def test_real_sick_r_has_all_pairs(shared_data):
    data = load_pairs(shared_data / "sick-r")
    assert len(data) == 9927
