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
    assert (one.name, one.split) == ("a", "test")  # a file not named like a split: labelled test
    both = load_pairs(tmp_path, split="all")
    assert len(both) == 3 and both.sentence2[-1] == "q" and both.split == "a+b"


def _split_folder(root):
    root.mkdir()
    for split, n in (("train", 3), ("valid", 2), ("test", 1)):
        rows = "".join(f"{split} {i}\tother {i}\t{i}\n" for i in range(n))
        (root / f"{split}.tsv").write_text("sentence1\tsentence2\tscore\n" + rows)
    return root


def test_pair_folder_reads_only_the_asked_split(tmp_path):
    root = _split_folder(tmp_path / "stsb")
    test = load_pairs(root)  # default: test only, not train + valid + test
    assert (test.name, test.split, len(test)) == ("stsb", "test", 1) and test.sentence1 == ["test 0"]
    valid = load_pairs(root, split="valid")
    assert (valid.split, len(valid)) == ("valid", 2)
    assert load_pairs(root, split="train,valid").split == "train+valid"
    everything = load_pairs(root, split="all")
    assert (everything.split, len(everything)) == ("test+train+valid", 6)
    with pytest.raises(FileNotFoundError, match="no split 'dev'; available: test, train, valid, all"):
        load_pairs(root, split="dev")
    one = load_pairs(root / "valid.tsv")  # a split file: dataset named by its folder
    assert (one.name, one.split, len(one)) == ("stsb", "valid", 2)
    with pytest.raises(ValueError, match="holds split 'valid', not 'test'"):
        load_pairs(root / "valid.tsv", split="test")


def test_pair_path_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        load_pairs(tmp_path / "missing")
    (tmp_path / "parent" / "child").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="sub-folders: child"):
        load_pairs(tmp_path / "parent")


def test_pairs_bad_rows(tmp_path):
    (tmp_path / "bad.tsv").write_text("sentence1\tsentence2\n1\t2\n")
    with pytest.raises(ValueError, match=r"bad.tsv:2: row lacks"):
        load_pairs(tmp_path / "bad.tsv")
    (tmp_path / "nan.tsv").write_text("sentence1\tsentence2\tscore\na\tb\t4\n\nc\td\thigh\n")
    with pytest.raises(ValueError, match=r"nan.tsv:4: non-numeric score 'high'"):
        load_pairs(tmp_path / "nan.tsv")


def test_non_utf8_files_name_file_and_line(tmp_path, beir_dir):
    (tmp_path / "latin.tsv").write_bytes("sentence1\tsentence2\tscore\na\tb\t1\ncaf\xe9\tx\t2\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin.tsv:3: not valid UTF-8 \(byte 0xe9 at column 4\)"):
        load_pairs(tmp_path / "latin.tsv")
    qrels = beir_dir / "qrels" / "test.tsv"
    good = qrels.read_bytes()
    qrels.write_bytes(good + b"q1\td\xff\t1\n")
    with pytest.raises(ValueError, match=r"test.tsv:8: not valid UTF-8"):
        load_retrieval(beir_dir)
    qrels.write_bytes(good)
    corpus = beir_dir / "corpus.jsonl"
    corpus.write_bytes(b'{"_id": "z", "text": "ok"}\n{"_id": "y", "text": "\xc3"}\n')
    with pytest.raises(ValueError, match=r"corpus.jsonl:2: not valid UTF-8"):
        load_retrieval(beir_dir)


def test_missing_retrieval_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing: no such folder"):
        load_retrieval(tmp_path / "missing")


def test_real_sick_r_has_all_pairs(shared_data):
    data = load_pairs(shared_data / "sick-r", split="all")
    assert len(data) == 9927 and data.split == "test+train+trial"


def test_real_stsb_zh_default_is_the_test_split(shared_data):
    data = load_pairs(shared_data / "sts-zh" / "stsb-zh")
    assert (data.split, len(data)) == ("test", 1361)  # not train + valid + test (8,050 pairs)
