"""Loaders for retrieval folders (BEIR and FlagEmbedding layouts) and scored sentence-pair files (TSV/JSONL).

BEIR layout: ``corpus.jsonl`` (``_id``, ``title``, ``text``), ``queries.jsonl`` (``_id``, ``text``),
``qrels/<split>.tsv`` (header ``query-id  corpus-id  score``).
FlagEmbedding layout: ``corpus.jsonl`` (``id``, ``title``, ``text``), ``<split>_queries.jsonl`` (``id``, ``text``),
``<split>_qrels.jsonl`` (``qid``, ``docid``, ``relevance``).
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from flagembed._io import read_jsonl

logger = logging.getLogger(__name__)


@dataclass
class RetrievalData:
    """One split of a retrieval dataset, restricted to the queries that have judgements."""

    name: str
    split: str
    corpus: dict[str, dict[str, str]]  # doc_id -> {"title", "text"}
    queries: dict[str, str]  # query_id -> text
    qrels: dict[str, dict[str, int]]  # query_id -> {doc_id: relevance}
    stats: dict[str, int] = field(default_factory=dict)  # what was dropped and why

    def doc_ids(self) -> list[str]:
        """Corpus ids in file order."""
        return list(self.corpus)

    def doc_texts(self) -> list[str]:
        """Document texts as FlagEmbedding builds them: ``f"{title} {text}".strip()``."""
        return [f"{d.get('title') or ''} {d.get('text') or ''}".strip() for d in self.corpus.values()]

    def fingerprint(self) -> str:
        """Hash of the corpus ids and texts (part of the embedding-cache key)."""
        h = hashlib.sha256()
        for doc_id, text in zip(self.corpus, self.doc_texts()):
            h.update(doc_id.encode())
            h.update(b"\0")
            h.update(text.encode())
            h.update(b"\1")
        return h.hexdigest()[:16]


@dataclass
class PairData:
    """Scored sentence pairs (STS scores or 0/1 labels)."""

    name: str
    sentence1: list[str]
    sentence2: list[str]
    scores: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)


def _doc_id(obj: dict[str, Any], path: Path, i: int) -> str:
    for key in ("_id", "id", "docid"):
        if key in obj:
            return str(obj[key])
    raise ValueError(f"{path}: record {i} has no '_id' or 'id' field (keys: {sorted(obj)})")


def _load_corpus(path: Path) -> dict[str, dict[str, str]]:
    corpus: dict[str, dict[str, str]] = {}
    for i, obj in enumerate(read_jsonl(path)):
        doc_id = _doc_id(obj, path, i)
        if doc_id in corpus:
            raise ValueError(f"{path}: record {i} repeats document id {doc_id!r}")
        corpus[doc_id] = {"title": str(obj.get("title") or ""), "text": str(obj.get("text") or "")}
    return corpus


def _load_queries(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for i, obj in enumerate(read_jsonl(path)):
        if "text" not in obj:
            raise ValueError(f"{path}: record {i} has no 'text' field")
        out[_doc_id(obj, path, i)] = str(obj["text"])
    return out


def _load_qrels_tsv(path: Path) -> list[tuple[str, str, int]]:
    rows: list[tuple[str, str, int]] = []
    with open(path, encoding="utf-8", newline="") as f:
        for lineno, line in enumerate(f, 1):
            parts = line.rstrip("\r\n").split("\t")
            if not line.strip():
                continue
            if lineno == 1 and not _is_number(parts[-1]):
                continue  # header
            if len(parts) == 4:  # TREC qrels: qid 0 docid rel
                parts = [parts[0], parts[2], parts[3]]
            if len(parts) != 3 or not _is_number(parts[2]):
                raise ValueError(f"{path}:{lineno}: expected 'query-id<TAB>corpus-id<TAB>score', got {line.strip()!r}")
            rows.append((parts[0], parts[1], int(float(parts[2]))))
    return rows


def _load_qrels_jsonl(path: Path) -> list[tuple[str, str, int]]:
    rows = []
    for i, obj in enumerate(read_jsonl(path)):
        try:
            rows.append((str(obj["qid"]), str(obj["docid"]), int(obj.get("relevance", 1))))
        except KeyError as exc:
            raise ValueError(f"{path}: record {i} lacks {exc.args[0]!r} (need qid, docid, relevance)") from exc
    return rows


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def load_retrieval(directory: str | os.PathLike[str], split: str = "test", *, name: str | None = None) -> RetrievalData:
    """Load one split of a BEIR-layout or FlagEmbedding-layout retrieval folder.

    Only queries with judgements in ``split`` are kept. Judgements naming an unknown query or document
    are dropped and counted in ``stats`` (``unknown_query_qrels``, ``unknown_doc_qrels``), not fatal.

    Raises:
        FileNotFoundError: the folder lacks a corpus, queries or the split's qrels (the message lists what exists).
        ValueError: the split has no usable judgements.
    """
    root = Path(directory)
    corpus_path = root / "corpus.jsonl"
    if (root / "qrels" / f"{split}.tsv").is_file():
        queries_path, qrels_rows = root / "queries.jsonl", _load_qrels_tsv(root / "qrels" / f"{split}.tsv")
    elif (root / f"{split}_qrels.jsonl").is_file():
        queries_path, qrels_rows = root / f"{split}_queries.jsonl", _load_qrels_jsonl(root / f"{split}_qrels.jsonl")
    else:
        found = sorted(p.name for p in (root / "qrels").glob("*.tsv")) if (root / "qrels").is_dir() else []
        found += sorted(p.name for p in root.glob("*_qrels.jsonl")) if root.is_dir() else []
        raise FileNotFoundError(
            f"{root}: no qrels for split {split!r} (looked for qrels/{split}.tsv and {split}_qrels.jsonl); "
            f"found: {', '.join(found) or 'nothing'}"
        )
    for p in (corpus_path, queries_path):
        if not p.is_file():
            raise FileNotFoundError(f"{root}: missing {p.name}")
    corpus, all_queries = _load_corpus(corpus_path), _load_queries(queries_path)

    stats = {"qrels_rows": len(qrels_rows), "unknown_query_qrels": 0, "unknown_doc_qrels": 0}
    qrels: dict[str, dict[str, int]] = {}
    for qid, did, rel in qrels_rows:
        if qid not in all_queries:
            stats["unknown_query_qrels"] += 1
        elif did not in corpus:
            stats["unknown_doc_qrels"] += 1
        else:
            qrels.setdefault(qid, {})[did] = rel
    for key in ("unknown_query_qrels", "unknown_doc_qrels"):
        if stats[key]:
            logger.warning(
                "%s/%s: %d judgements name an unknown %s; dropped", root, split, stats[key], key.split("_")[1]
            )
    if not qrels:
        raise ValueError(f"{root}: split {split!r} has no usable judgements ({stats['qrels_rows']} rows read)")
    queries = {q: all_queries[q] for q in all_queries if q in qrels}
    stats.update(queries=len(queries), queries_without_qrels=len(all_queries) - len(queries), corpus=len(corpus))
    return RetrievalData(name or root.name, split, corpus, queries, qrels, stats)


def load_pairs(path: str | os.PathLike[str], *, name: str | None = None) -> PairData:
    """Load scored pairs from a TSV (header with ``sentence1``, ``sentence2``, ``score`` or ``label``) or JSONL.

    Extra columns are ignored. A folder loads every ``*.tsv`` in it, in name order, as one set
    (SICK-R: MTEB scores train + trial + test together).

    Raises:
        ValueError: a required column is missing or a score is not a number (file and row named).
    """
    p = Path(path)
    files = sorted(p.glob("*.tsv")) + sorted(p.glob("*.jsonl")) if p.is_dir() else [p]
    if not files:
        raise FileNotFoundError(f"{p}: no .tsv or .jsonl files")
    s1: list[str] = []
    s2: list[str] = []
    scores: list[float] = []
    for f in files:
        rows = _read_rows(f)
        for i, row in enumerate(rows):
            key = "score" if "score" in row else "label"
            try:
                a, b, value = row["sentence1"], row["sentence2"], row[key]
            except KeyError as exc:
                raise ValueError(
                    f"{f}: row {i} lacks {exc.args[0]!r}; need sentence1, sentence2 and score or label"
                ) from exc
            try:
                scores.append(float(value))
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{f}: row {i} has a non-numeric {key} {value!r}") from exc
            s1.append(str(a))
            s2.append(str(b))
    if not scores:
        raise ValueError(f"{p}: no pairs found")
    return PairData(name or p.stem, s1, s2, np.asarray(scores, dtype=np.float64))


def _read_rows(path: Path) -> list[dict[str, Any]]:
    if path.suffix in (".jsonl", ".json"):
        return list(read_jsonl(path))
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
