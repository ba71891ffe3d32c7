"""Input validation and text formatting shared by the inference classes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def as_text_list(texts: Any, what: str = "texts") -> tuple[list[str], bool]:
    """Validate ``texts`` and return ``(list_of_str, was_single_string)``.

    Raises:
        TypeError: the input is not a string or a list/tuple of strings; names the bad index.
        ValueError: a text holds a lone UTF-16 surrogate (not encodable as UTF-8); names the index.
    """
    if isinstance(texts, str):
        check_unicode(texts, what)
        return [texts], True
    if texts is None or isinstance(texts, (bytes, Mapping)) or not isinstance(texts, Sequence):
        raise TypeError(f"{what} must be a string or a list of strings, got {type(texts).__name__}")
    out = list(texts)
    for i, item in enumerate(out):
        if not isinstance(item, str):
            raise TypeError(f"{what}[{i}] must be a string, got {type(item).__name__}: {item!r:.80}")
        check_unicode(item, f"{what}[{i}]")
    return out, False


def check_unicode(text: str, what: str) -> None:
    """Raise ``ValueError`` naming ``what`` when ``text`` holds a lone surrogate (``"\\ud800"``)."""
    if text.isascii():
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"{what} has a lone UTF-16 surrogate at character {exc.start}; text must be valid Unicode"
        ) from None


def corpus_text(doc: Any, index: int) -> str:
    """A corpus item as text: strings as they are, ``{"title", "text"}`` dicts joined like BEIR/MTEB."""
    if isinstance(doc, str):
        check_unicode(doc, f"corpus[{index}]")
        return doc
    if isinstance(doc, Mapping):
        text = doc.get("text")
        title = doc.get("title") or ""
        if not isinstance(text, str) or not isinstance(title, str):
            raise TypeError(f"corpus[{index}] must have string 'text' (and optional 'title') fields, got {doc!r:.80}")
        check_unicode(title, f"corpus[{index}].title")
        check_unicode(text, f"corpus[{index}].text")
        return f"{title} {text}".strip()
    raise TypeError(f"corpus[{index}] must be a string or a {{'title','text'}} dict, got {type(doc).__name__}")


def as_corpus_list(corpus: Any) -> tuple[list[str], bool]:
    """Validate a corpus (a string, a dict, or a list of either) and return texts plus a single flag."""
    if isinstance(corpus, (str, Mapping)):
        return [corpus_text(corpus, 0)], True
    if corpus is None or not isinstance(corpus, Sequence):
        raise TypeError(f"corpus must be a string, a dict or a list of them, got {type(corpus).__name__}")
    return [corpus_text(d, i) for i, d in enumerate(corpus)], False


def apply_instruction(texts: Sequence[str], instruction: str | None, fmt: str = "{}{}") -> list[str]:
    """``fmt.format(instruction, text)`` per text; a literal ``\\n`` in ``fmt`` means a newline (as FlagEmbedding)."""
    if not instruction:
        return list(texts)
    fmt = fmt.replace("\\n", "\n")
    return [fmt.format(instruction, t) for t in texts]
