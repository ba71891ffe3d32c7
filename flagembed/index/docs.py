"""The documents a searcher returns with its hits: title, text and metadata per id, saved as ``docs.jsonl``."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from flagembed.index.storage import IndexFormatError, open_binary

DOCS_FILE = "docs.jsonl"
_CORE = ("_id", "id", "title", "text", "metadata")


def doc_record(doc: Any) -> dict[str, Any]:
    """``{"title", "text", "metadata"}`` of a corpus item: a string, or a dict whose other fields
    (and a BEIR-style ``metadata`` object) become the metadata."""
    if isinstance(doc, str):
        return {"title": "", "text": doc, "metadata": {}}
    meta = dict(doc["metadata"]) if isinstance(doc.get("metadata"), Mapping) else {}
    meta.update((k, v) for k, v in doc.items() if k not in _CORE)
    if "metadata" in doc and not isinstance(doc["metadata"], Mapping):
        meta["metadata"] = doc["metadata"]
    return {"title": doc.get("title") or "", "text": doc["text"], "metadata": meta}


class DocStore:
    """Documents by id, kept in step with the indexes (added and removed with them)."""

    def __init__(self, docs: Mapping[str, dict[str, Any]] | None = None) -> None:
        self._docs: dict[str, dict[str, Any]] = dict(docs or {})

    def __len__(self) -> int:
        return len(self._docs)

    def __contains__(self, doc_id: object) -> bool:
        return doc_id in self._docs

    def add(self, ids: Sequence[str], corpus: Sequence[Any]) -> None:
        """Store already validated corpus items under their ids."""
        for doc_id, doc in zip(ids, corpus):
            self._docs[doc_id] = doc_record(doc)

    def remove(self, ids: Iterable[str]) -> None:
        """Forget documents (unknown ids ignored)."""
        for doc_id in ids:
            self._docs.pop(str(doc_id), None)

    def get(self, doc_id: str) -> dict[str, Any]:
        """A copy of one document's ``{"title", "text", "metadata"}``."""
        rec = self._docs[doc_id]
        return {"title": rec["title"], "text": rec["text"], "metadata": dict(rec["metadata"])}

    def write(self, path: Path) -> None:
        """One ``{"id", "title", "text", "metadata"}`` JSON object per line.

        Raises:
            TypeError: a document's metadata is not JSON-serialisable (names the id).
        """
        with open(path, "w", encoding="utf-8") as f:
            for doc_id, rec in self._docs.items():
                try:
                    line = json.dumps({"id": doc_id, **rec}, ensure_ascii=False, allow_nan=False)
                except (TypeError, ValueError) as exc:
                    raise TypeError(f"document {doc_id!r}: metadata is not JSON-serialisable ({exc})") from exc
                f.write(line + "\n")

    @classmethod
    def load(cls, path: Path, expected_ids: Iterable[str]) -> DocStore:
        """Read ``docs.jsonl``; its ids must be exactly ``expected_ids`` (the indexes' ids).

        Raises:
            IndexFormatError: a bad line, a repeated id, or ids that differ from the indexes' (names the file).
        """
        docs: dict[str, dict[str, Any]] = {}
        with open_binary(path) as f:
            for lineno, raw in enumerate(f, 1):
                rec = _parse(raw, path, lineno)
                if rec["id"] in docs:
                    raise IndexFormatError(f"{path}:{lineno}: document id {rec['id']!r} repeats")
                docs[rec.pop("id")] = rec
        want = set(expected_ids)
        if set(docs) != want:
            extra, missing = sorted(set(docs) - want)[:3], sorted(want - set(docs))[:3]
            raise IndexFormatError(
                f"{path} is inconsistent with the indexes: extra ids {extra}, missing ids {missing}"
            )
        return cls(docs)


def _parse(raw: bytes, path: Path, lineno: int) -> dict[str, Any]:
    try:
        rec = json.loads(raw.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise IndexFormatError(f"{path}:{lineno}: invalid JSON ({exc})") from exc
    ok = (
        isinstance(rec, dict)
        and set(rec) == {"id", "title", "text", "metadata"}
        and all(isinstance(rec[k], str) for k in ("id", "title", "text"))
        and isinstance(rec["metadata"], dict)
    )
    if not ok:
        raise IndexFormatError(f"{path}:{lineno}: expected {{id, title, text, metadata}} with string id/title/text")
    return rec
