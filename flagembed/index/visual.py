"""Dense indexes of images, texts or image+text documents (Visualized-BGE), queried by text, image or both.

The index is the ordinary :class:`HybridSearcher` with a dense index; each document's image path is
kept in its metadata (``metadata.image``), so hits show which picture matched.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from flagembed._io import read_jsonl
from flagembed.index.dense import DenseIndex
from flagembed.index.docs import DocStore
from flagembed.index.hybrid import HybridSearcher
from flagembed.index.identity import model_info
from flagembed.index.results import SearchResults
from flagembed.index.storage import check_index_target
from flagembed.inference.m3_output import M3Output
from flagembed.inference.visual import VisualEmbedder

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


def list_images(folder: str | os.PathLike[str]) -> list[Path]:
    """Image files under ``folder`` (recursive, by suffix), sorted by relative path.

    Raises:
        FileNotFoundError: ``folder`` is not a directory. ValueError: it holds no image files.
    """
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist")
    found = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not found:
        raise ValueError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) under {root}")
    return found


def read_visual_corpus(
    images: str | os.PathLike[str] | None = None, corpus: str | os.PathLike[str] | None = None
) -> tuple[list[str], list[dict[str, Any]], list[dict[str, Any]]]:
    """``(ids, docs, items)`` from an image folder and/or a JSONL whose records may carry an ``image`` path.

    Folder images get their relative path as id and title; JSONL records need ``_id``/``id`` and a
    ``text`` and/or ``image`` (relative paths resolve against the JSONL's folder). ``items`` are the
    :meth:`VisualEmbedder.encode_items` inputs.

    Raises:
        ValueError: neither source given, a record without id or content (names the line), a repeated id.
    """
    if images is None and corpus is None:
        raise ValueError("give an image folder, a corpus JSONL, or both")
    ids: list[str] = []
    docs: list[dict[str, Any]] = []
    items: list[dict[str, Any]] = []
    if images is not None:
        root = Path(images)
        for path in list_images(root):
            rel = path.relative_to(root).as_posix()
            ids.append(rel)
            docs.append({"title": rel, "text": "", "image": str(path)})
            items.append({"image": str(path)})
    if corpus is not None:
        base = Path(corpus).parent
        for i, rec in enumerate(read_jsonl(corpus)):
            doc_id, text, image = rec.get("_id", rec.get("id")), rec.get("text"), rec.get("image")
            if doc_id is None or (text is None and image is None):
                raise ValueError(f"{corpus}: record {i} needs an '_id' (or 'id') and a 'text' and/or an 'image'")
            if text is not None and not isinstance(text, str) or image is not None and not isinstance(image, str):
                raise ValueError(f"{corpus}: record {i}: 'text' and 'image' must be strings")
            full = f"{rec.get('title') or ''} {text or ''}".strip()
            item: dict[str, Any] = {"text": full}
            extra = {k: v for k, v in rec.items() if k not in ("_id", "id", "title", "text", "image")}
            doc = {**extra, "title": str(rec.get("title") or ""), "text": text or ""}
            if image is not None:
                item["image"] = doc["image"] = str(base / image)
            ids.append(str(doc_id))
            docs.append(doc)
            items.append(item)
    seen: set[str] = set()
    for doc_id in ids:
        if doc_id in seen:
            raise ValueError(f"document id {doc_id!r} repeats")
        seen.add(doc_id)
    return ids, docs, items


def build_visual_index(
    model: str | os.PathLike[str] | VisualEmbedder,
    out: str | os.PathLike[str],
    *,
    images: str | os.PathLike[str] | None = None,
    corpus: str | os.PathLike[str] | None = None,
    dense_kind: str = "flat",
    show_progress: bool | None = None,
    **embedder_kwargs: Any,
) -> HybridSearcher:
    """Embed images / texts / image+text documents and save a dense searcher to ``out`` (atomically).

    Raises:
        ImageBatchError: an image cannot be read (names its index and file).
    """
    check_index_target(out)
    ids, docs, items = read_visual_corpus(images, corpus)
    embedder = model if isinstance(model, VisualEmbedder) else VisualEmbedder(model, **embedder_kwargs)
    vectors = embedder.encode_items(items, show_progress=show_progress)
    dense = DenseIndex(embedder.dim, kind=dense_kind)  # type: ignore[arg-type]
    dense.model_info = model_info(embedder)
    searcher = HybridSearcher(embedder, dense=dense, docs=DocStore())
    dense.add(ids, vectors)
    searcher.docs.add(ids, docs)  # type: ignore[union-attr]
    searcher.save(Path(out))
    return searcher


def search_visual(
    searcher: HybridSearcher, *, text: str | None = None, image: Any = None, top_k: int = 10
) -> SearchResults:
    """Search a dense index with a text, an image, or an image+text query (one query).

    Raises:
        ValueError: neither given, or the searcher's model is not a :class:`VisualEmbedder`.
    """
    if image is None:
        if not text:
            raise ValueError("give a query text, an image, or both")
        return searcher.search(text, top_k=top_k, modes=["dense"])
    embedder = searcher.embedder
    if not isinstance(embedder, VisualEmbedder):
        raise ValueError("image queries need an index built with a Visualized-BGE model (index build --images)")
    query = embedder.encode_images([image], [text])
    return searcher.search_encoded(M3Output(dense=query), top_k, modes=["dense"])
