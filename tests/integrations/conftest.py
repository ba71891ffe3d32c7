"""Fixtures for the LangChain / LlamaIndex adapters: tiny models, and ~200 real SciFact abstracts with claims."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import tiny_models


@pytest.fixture(scope="session")
def tiny_cross_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_models.build_bert(tmp_path_factory.mktemp("integrations") / "tiny-ce", seed=3, classifier=True)


def _data_root() -> Path | None:
    for root in (os.environ.get("FLAGEMBED_SHARED_DATA"), Path(__file__).resolve().parents[2].parent / "shared/data"):
        if root and Path(root).is_dir():
            return Path(root)
    return None


@pytest.fixture(scope="session")
def scifact_subset() -> dict:
    """200 SciFact abstracts: the gold abstracts of the first 8 train claims plus the corpus' first others."""
    root = _data_root()
    if root is None or not (root / "scifact-train" / "corpus.jsonl").is_file():
        pytest.skip("../shared/data/scifact-train is absent")
    base = root / "scifact-train"
    queries = {}
    for line in open(base / "queries.jsonl", encoding="utf-8"):
        d = json.loads(line)
        queries[d["_id"]] = d["text"]
    gold: dict[str, str] = {}
    for line in list(open(base / "qrels" / "train.tsv", encoding="utf-8"))[1:]:
        qid, did, _ = line.rstrip("\n").split("\t")
        if qid not in gold and len(gold) < 8:
            gold[qid] = did
    docs: dict[str, str] = {}
    wanted = set(gold.values())
    for line in open(base / "corpus.jsonl", encoding="utf-8"):
        d = json.loads(line)
        if d["_id"] in wanted or len(docs) < 200 - len(wanted - set(docs)):
            docs[d["_id"]] = f"{d['title']} {d['text']}".strip()
        if wanted <= set(docs) and len(docs) >= 200:
            break
    return {"docs": docs, "claims": {q: queries[q] for q in gold}, "gold": gold}
