"""Image loading and EVA-CLIP eval preprocessing with Pillow + numpy (no torchvision).

The transform is Visualized-BGE's ``preprocess_val``: bicubic resize of the shorter side to the image
size (long side ``int(size * long / short)``, Pillow's antialiased bicubic), centre crop (offsets
``int(round((h - size) / 2))``), RGB, ``/255``, then the OpenAI CLIP mean/std.
"""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
DEFAULT_MAX_PIXELS = 89_478_485  # Pillow's own decompression-bomb threshold (MAX_IMAGE_PIXELS)

ImageInput = Union[str, os.PathLike, bytes, "np.ndarray", Any]  # path, encoded bytes, HWC array or PIL image


class ImageError(ValueError):
    """An image could not be read or is out of bounds; ``index`` names the input (``None`` if single)."""

    def __init__(self, message: str, index: int | None = None) -> None:
        super().__init__(message)
        self.index = index


class ImageTooLargeError(ImageError):
    """An image has more pixels than allowed (checked from its header, before decoding)."""


def _pil() -> Any:
    try:
        from PIL import Image
    except ImportError as exc:  # pragma: no cover - Pillow is a core dependency of the visual extra
        raise ImportError('image input needs Pillow: pip install "flagembed[visual]"') from exc
    return Image


def describe(image: Any) -> str:
    """A short name for an image input, for error messages."""
    if isinstance(image, (str, os.PathLike)):
        return repr(os.fspath(image))
    if isinstance(image, bytes):
        return f"<{len(image)} bytes>"
    if isinstance(image, np.ndarray):
        return f"<array {tuple(image.shape)}>"
    return f"<{type(image).__name__}>"


def decode_data_url(url: str) -> bytes:
    """The bytes of a ``data:image/...;base64,`` URL (or of plain base64)."""
    payload = url
    if url.startswith("data:"):
        head, sep, payload = url.partition(",")
        if not sep or ";base64" not in head:
            raise ValueError("an image data URL must look like data:image/<type>;base64,<data>")
    try:
        return base64.b64decode(payload, validate=True)
    except ValueError as exc:
        raise ValueError(f"image data is not valid base64: {exc}") from None


def load_image(image: ImageInput, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Any:
    """A PIL image from a path, encoded bytes, a ``data:`` URL, an HWC uint8 array or a PIL image.

    Raises:
        ImageError: the file is missing, not an image, truncated, or has more than ``max_pixels`` pixels.
    """
    Image = _pil()
    name = describe(image)
    try:
        if isinstance(image, Image.Image):
            img = image
        elif isinstance(image, np.ndarray):
            img = _from_array(image)
        else:
            if isinstance(image, str) and image.startswith("data:"):
                image = decode_data_url(image)
            src = io.BytesIO(image) if isinstance(image, bytes) else Path(image)
            img = Image.open(src)
            _check_pixels(img.size, max_pixels, name)
            img.load()  # decode now, so a truncated file fails here and not inside the model step
    except ImageError:
        raise
    except (OSError, ValueError, TypeError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ImageError(f"cannot read image {name}: {exc}") from exc
    _check_pixels(img.size, max_pixels, name)
    return img


def _check_pixels(size: tuple[int, int], max_pixels: int | None, name: str) -> None:
    w, h = size
    if w < 1 or h < 1:
        raise ImageError(f"image {name} is empty ({w}x{h})")
    if max_pixels is not None and w * h > max_pixels:
        raise ImageTooLargeError(f"image {name} has {w}x{h}={w * h} pixels, over the limit of {max_pixels}")


def _from_array(arr: np.ndarray) -> Any:
    Image = _pil()
    if arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (1, 3, 4)):
        if arr.dtype != np.uint8:
            raise ImageError(f"an image array must be uint8 HWC (0..255), got dtype {arr.dtype}")
        return Image.fromarray(arr[..., 0] if arr.ndim == 3 and arr.shape[2] == 1 else arr)
    raise ImageError(f"an image array must be HxW or HxWxC with C in 1, 3, 4; got shape {tuple(arr.shape)}")


def resize_short_side(img: Any, size: int) -> Any:
    """Resize so the shorter side is ``size`` (bicubic, antialiased), as torchvision's ``Resize(size)``."""
    Image = _pil()
    w, h = img.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = size, int(size * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    if (new_w, new_h) == (w, h):
        return img
    return img.resize((new_w, new_h), Image.BICUBIC)


def center_crop(img: Any, size: int) -> Any:
    """Centre crop to ``size``×``size`` (offsets rounded as torchvision's ``CenterCrop``)."""
    w, h = img.size
    if w < size or h < size:  # only after a resize to a smaller size; pad with black like torchvision
        canvas = _pil().new(img.mode, (max(w, size), max(h, size)))
        canvas.paste(img, ((max(w, size) - w) // 2, (max(h, size) - h) // 2))
        img, (w, h) = canvas, canvas.size
    top = int(round((h - size) / 2.0))
    left = int(round((w - size) / 2.0))
    return img.crop((left, top, left + size, top + size))


def to_tensor(img: Any) -> torch.Tensor:
    """RGB ``[3, H, W]`` float32 normalised with the CLIP mean/std."""
    arr = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    mean = np.asarray(CLIP_MEAN, dtype=np.float32)
    std = np.asarray(CLIP_STD, dtype=np.float32)
    return torch.from_numpy(((arr - mean) / std).transpose(2, 0, 1).copy())


def preprocess(image: ImageInput, size: int = 224, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> torch.Tensor:
    """One image → ``[3, size, size]`` float32, exactly Visualized-BGE's eval transform."""
    img = load_image(image, max_pixels=max_pixels)
    return to_tensor(center_crop(resize_short_side(img, size), size))


def preprocess_batch(
    images: Sequence[ImageInput], size: int = 224, *, max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> tuple[torch.Tensor, dict[int, ImageError]]:
    """Preprocess a list; unreadable images are returned as errors by position instead of stopping the batch.

    Returns:
        ``(pixels [n_ok, 3, size, size], {position: ImageError})`` with the readable images in input order.
    """
    ok: list[torch.Tensor] = []
    errors: dict[int, ImageError] = {}
    for i, image in enumerate(images):
        try:
            ok.append(preprocess(image, size, max_pixels=max_pixels))
        except ImageError as exc:
            errors[i] = exc
    pixels = torch.stack(ok) if ok else torch.zeros(0, 3, size, size)
    return pixels, errors
