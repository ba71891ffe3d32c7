"""Image inputs of ``POST /v1/embeddings`` for Visualized-BGE models (OpenAI-style content parts).

An ``input`` item may be a string (text), one content part, or a list of parts making one image+text input:

    {"type": "text", "text": "a red circle"}
    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR..."}}
    [{"type": "image_url", "image_url": {"url": "data:..."}}, {"type": "text", "text": "make it blue"}]

Only ``data:`` URLs (base64) are accepted: the server never fetches remote URLs. Images are decoded
here, before queueing, so a bad image is answered 422 naming its input and an oversized one 413.
"""

from __future__ import annotations

from typing import Any

from flagembed.models.vision import ImageError, ImageTooLargeError, decode_data_url, load_image
from flagembed.serve.limits import ApiError


def has_image_parts(value: Any) -> bool:
    """Whether a request's ``input`` holds content parts (dicts or lists) rather than plain strings."""
    return isinstance(value, list) and any(
        isinstance(v, dict) or (isinstance(v, list) and any(isinstance(x, dict) for x in v)) for v in value
    )


def _parts(item: Any, i: int) -> tuple[str | None, str]:
    """``(data URL or None, text)`` of one input item."""
    parts = item if isinstance(item, list) else [item]
    url, texts = None, []
    for j, part in enumerate(parts):
        where = f"input[{i}]" + (f"[{j}]" if isinstance(item, list) else "")
        if isinstance(part, str):
            texts.append(part)
            continue
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "image_url":
            spec = part.get("image_url")
            link = spec.get("url") if isinstance(spec, dict) else spec
            if not isinstance(link, str):
                raise ApiError(422, f"{where}.image_url must hold a 'url' string", param="input")
            if not link.startswith("data:"):
                msg = f"{where}: only data: URLs are accepted (the server fetches nothing)"
                raise ApiError(422, msg, param="input")
            if url is not None:
                raise ApiError(422, f"input[{i}] has more than one image; one image per input", param="input")
            url = link
        else:
            raise ApiError(
                422, f"{where} must be a string or a content part of type 'text' or 'image_url'", param="input"
            )
    return url, " ".join(texts)


def parse_image_inputs(value: list[Any], *, max_image_pixels: int) -> tuple[list[Any], int]:
    """Items for :meth:`VisualEmbedder.encode_items` (strings, or ``{"image": PIL image, "text": str}``).

    Returns:
        ``(items, number of images)``.

    Raises:
        ApiError: 422 for a malformed part or an unreadable image, 413 for an image over ``max_image_pixels``.
    """
    items: list[Any] = []
    images = 0
    for i, item in enumerate(value):
        if isinstance(item, str):
            items.append(item)
            continue
        url, text = _parts(item, i)
        if url is None:
            items.append(text)
            continue
        try:
            data = decode_data_url(url)
        except ValueError as exc:
            raise ApiError(422, f"input[{i}]: {exc}", param="input", code="invalid_image") from None
        try:
            picture = load_image(data, max_pixels=max_image_pixels)
        except ImageTooLargeError as exc:
            msg = f"input[{i}]: {exc} (max_image_pixels)"
            raise ApiError(413, msg, param="input", code="image_too_large") from None
        except ImageError as exc:
            raise ApiError(422, f"input[{i}]: {exc}", param="input", code="invalid_image") from None
        items.append({"image": picture, "text": text})
        images += 1
    return items, images
