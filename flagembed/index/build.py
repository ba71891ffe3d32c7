"""Build a searcher from a model name and a JSONL corpus (what ``flagembed index build`` runs)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from flagembed._io import read_jsonl
from flagembed.index.hybrid import HybridSearcher, check_modes
from flagembed.index.storage import check_index_target
from flagembed.inference import Embedder, M3Embedder
from flagembed.models import open_checkpoint
from flagembed.models.heads import SPARSE_FILE

_LOADING_KEYS = ("revision", "cache_dir", "token", "local_files_only", "trust_remote_code")


def load_embedder(model: str | os.PathLike[str], modes: str | Sequence[str] | None = None, **kwargs: Any) -> Embedder:
    """An :class:`M3Embedder` when the checkpoint has M3 heads (or is registered as M3), else an :class:`Embedder`.

    Raises:
        ValueError: sparse or ColBERT modes asked of a model without M3 heads.
    """
    # consent and "not a model" are checked before anything is downloaded
    ckpt = open_checkpoint(model, **{k: kwargs[k] for k in _LOADING_KEYS if k in kwargs})
    spec, path = ckpt.spec, ckpt.path
    is_m3 = (spec is not None and spec.kind == "m3") or (path / SPARSE_FILE).is_file()
    chosen = check_modes(modes) if modes is not None else (["dense", "sparse", "colbert"] if is_m3 else ["dense"])
    if not is_m3 and set(chosen) - {"dense", "bm25"}:
        raise ValueError(f"model {os.fspath(model)!r} has no BGE-M3 heads: only the dense mode is available")
    return M3Embedder(model, **kwargs) if is_m3 else Embedder(model, **kwargs)


def read_corpus(path: str | os.PathLike[str]) -> tuple[list[str], list[dict[str, Any]]]:
    """Ids and documents from a BEIR-style JSONL (``_id`` or ``id``, ``title``, ``text``, other fields kept).

    Each document is ``{"title", "text", ...}`` with the record's other fields (stored as metadata).

    Raises:
        ValueError: a record without an id or text (names the line), or a repeated id.
    """
    ids: list[str] = []
    docs: list[dict[str, Any]] = []
    for i, rec in enumerate(read_jsonl(path)):
        doc_id = rec.get("_id", rec.get("id"))
        if doc_id is None or not isinstance(rec.get("text"), str):
            raise ValueError(f"{path}: record {i} needs an '_id' (or 'id') and a string 'text'")
        ids.append(str(doc_id))
        extra = {k: v for k, v in rec.items() if k not in ("_id", "id", "title", "text")}
        docs.append({**extra, "title": str(rec.get("title") or ""), "text": rec["text"]})
    return ids, docs


def build_index(
    model: str | os.PathLike[str],
    corpus: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    modes: str | Sequence[str] | None = None,
    dense_kind: str = "flat",
    show_progress: bool | None = None,
    **embedder_kwargs: Any,
) -> HybridSearcher:
    """Encode a JSONL corpus with ``model`` and save a searcher for ``modes`` to ``out`` (atomically).

    The destination and the corpus are checked before the model loads, so their errors come at once.
    """
    check_index_target(out)
    ids, docs = read_corpus(corpus)
    embedder = load_embedder(model, modes, show_progress=show_progress, **embedder_kwargs)
    searcher = HybridSearcher.build(
        embedder, docs, ids, modes=modes, dense_kind=dense_kind, show_progress=show_progress
    )
    searcher.save(Path(out))
    return searcher
