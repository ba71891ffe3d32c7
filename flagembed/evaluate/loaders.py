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
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from flagembed._io import iter_jsonl, text_lines

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
    split: str = "test"  # what was read: a split name, or several joined by "+"

    def __len__(self) -> int:
        return len(self.scores)


SPLIT_NAMES = ("train", "dev", "valid", "validation", "test", "trial")


def _doc_id(obj: dict[str, Any], path: Path, i: int) -> str:
    for key in ("_id", "id", "docid"):
        if key in obj:
            return str(obj[key])
    raise ValueError(f"{path}:{i}: record has no '_id' or 'id' field (keys: {sorted(obj)})")


def _load_corpus(path: Path) -> dict[str, dict[str, str]]:
    corpus: dict[str, dict[str, str]] = {}
    for i, obj in iter_jsonl(path):
        doc_id = _doc_id(obj, path, i)
        if doc_id in corpus:
            raise ValueError(f"{path}:{i}: repeats document id {doc_id!r}")
        corpus[doc_id] = {"title": str(obj.get("title") or ""), "text": str(obj.get("text") or "")}
    return corpus


def _load_queries(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for i, obj in iter_jsonl(path):
        if "text" not in obj:
            raise ValueError(f"{path}:{i}: record has no 'text' field")
        out[_doc_id(obj, path, i)] = str(obj["text"])
    return out


def _load_qrels_tsv(path: Path) -> list[tuple[str, str, int]]:
    rows: list[tuple[str, str, int]] = []
    for lineno, line in text_lines(path):
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
    for i, obj in iter_jsonl(path):
        try:
            rows.append((str(obj["qid"]), str(obj["docid"]), int(obj.get("relevance", 1))))
        except KeyError as exc:
            raise ValueError(f"{path}:{i}: record lacks {exc.args[0]!r} (need qid, docid, relevance)") from None
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
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder" if not root.exists() else f"{root}: not a folder")
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


def pair_splits(folder: str | os.PathLike[str]) -> dict[str, list[Path]]:
    """The splits of a pair folder: file stem -> files (``test.tsv`` -> ``test``), in name order."""
    files = sorted(Path(folder).glob("*.tsv")) + sorted(Path(folder).glob("*.jsonl"))
    out: dict[str, list[Path]] = {}
    for f in files:
        out.setdefault(f.stem, []).append(f)
    return dict(sorted(out.items()))


def _select_pair_files(p: Path, split: str | None) -> tuple[list[Path], str, str]:
    """(files, dataset name, split label) for a pair file or folder and a requested split."""
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file or folder")
    if not p.is_dir():
        stem_is_split = p.stem.lower() in SPLIT_NAMES
        if split is not None and stem_is_split and split != p.stem:
            raise ValueError(f"{p} holds split {p.stem!r}, not {split!r}; pass the folder {p.parent} with --split")
        label = p.stem if stem_is_split else (split or "test")
        return [p], (p.parent.name if stem_is_split else p.stem), label
    splits = pair_splits(p)
    if not splits:
        subs = sorted(d.name for d in p.iterdir() if d.is_dir())
        hint = f" (sub-folders: {', '.join(subs)}; pass one of them)" if subs else ""
        raise FileNotFoundError(f"{p}: no .tsv or .jsonl files{hint}")
    wanted = list(splits) if split == "all" else [s.strip() for s in (split or "test").split(",") if s.strip()]
    missing = [s for s in wanted if s not in splits]
    if missing or not wanted:
        raise FileNotFoundError(
            f"{p}: no split {', '.join(map(repr, missing or [split]))}; available: {', '.join(splits)}, all"
        )
    return [f for s in wanted for f in splits[s]], p.name, "+".join(wanted)


def load_pairs(path: str | os.PathLike[str], *, name: str | None = None, split: str | None = None) -> PairData:
    """Load scored pairs from a TSV (header with ``sentence1``, ``sentence2``, ``score`` or ``label``) or JSONL.

    Extra columns are ignored. A folder holds one file per split (``train.tsv``, ``test.tsv``, ...):
    ``split`` picks one (default ``test``), several (``"train,test"``) or ``"all"`` (SICK-R: MTEB scores
    train + trial + test together). ``PairData.split`` records what was read (``"test+train+trial"`` for all
    of SICK-R). A file named like a split (``valid.tsv``) is that split of the dataset named by its folder;
    any other file is dataset ``<stem>`` and labelled ``split`` (default ``test``).

    Raises:
        FileNotFoundError: no such path, or the folder lacks the split (the message lists the available ones).
        ValueError: a required column is missing, a score is not a number, or a line is not UTF-8 (file:line).
    """
    files, default_name, label = _select_pair_files(Path(path), split)
    s1: list[str] = []
    s2: list[str] = []
    scores: list[float] = []
    for f in files:
        for lineno, row in _read_rows(f):
            key = "score" if "score" in row else "label"
            try:
                a, b, value = row["sentence1"], row["sentence2"], row[key]
            except KeyError as exc:
                raise ValueError(
                    f"{f}:{lineno}: row lacks {exc.args[0]!r}; need sentence1, sentence2 and score or label"
                ) from None
            try:
                scores.append(float(value))
            except (TypeError, ValueError):
                raise ValueError(f"{f}:{lineno}: non-numeric {key} {value!r}") from None
            s1.append(str(a))
            s2.append(str(b))
    if not scores:
        raise ValueError(f"{path}: no pairs found")
    return PairData(name or default_name, s1, s2, np.asarray(scores, dtype=np.float64), label)


def _read_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, row)`` of a JSONL file or a headed TSV (no quoting)."""
    if path.suffix in (".jsonl", ".json"):
        yield from iter_jsonl(path)
        return
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    reader = csv.DictReader((line for _, line in text_lines(path)), delimiter="\t", quoting=csv.QUOTE_NONE)
    for row in reader:
        yield reader.line_num, row  # one line per row: no quoting
