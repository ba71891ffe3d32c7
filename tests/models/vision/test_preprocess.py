"""Image preprocessing equals a by-hand resize(short side, bicubic) + centre crop + CLIP normalisation."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from flagembed.models.vision import CLIP_MEAN, CLIP_STD, ImageError, load_image, preprocess, preprocess_batch


def _fixed_image(w: int, h: int, mode: str = "RGBA") -> Image.Image:
    rng = np.random.default_rng(0)
    channels = len(mode)
    arr = rng.integers(0, 256, size=(h, w, channels), dtype=np.uint8)
    return Image.fromarray(arr if channels > 1 else arr[..., 0], mode=mode)


def test_constants_are_openai_clip():
    assert CLIP_MEAN == (0.48145466, 0.4578275, 0.40821073)
    assert CLIP_STD == (0.26862954, 0.26130258, 0.27577711)


@pytest.mark.parametrize(
    ("w", "h", "resized", "box"),
    [
        (300, 200, (336, 224), (56, 0)),  # landscape: short side 200 → 224, long int(224*1.5)=336
        (200, 301, (224, 337), (0, 56)),  # portrait: int(224*301/200)=337, top round(113/2)=56
        (225, 224, (225, 224), (0, 0)),  # no resize; left = round(0.5) = 0 (round half to even)
    ],
)
def test_preprocess_equals_by_hand(w, h, resized, box):
    img = _fixed_image(w, h)
    by_hand = img.resize(resized, Image.BICUBIC) if resized != (w, h) else img
    left, top = box
    crop = by_hand.crop((left, top, left + 224, top + 224)).convert("RGB")
    arr = np.asarray(crop, dtype=np.float64) / 255.0
    expected = np.stack([(arr[..., c] - CLIP_MEAN[c]) / CLIP_STD[c] for c in range(3)])
    out = preprocess(img)
    assert tuple(out.shape) == (3, 224, 224)
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-6)


def test_inputs_path_bytes_array_agree(tmp_path):
    img = _fixed_image(120, 90, "RGB")
    path = tmp_path / "x.png"
    img.save(path)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    a = preprocess(str(path), 64)
    b = preprocess(buf.getvalue(), 64)
    c = preprocess(np.asarray(img), 64)
    assert a.shape == (3, 64, 64)
    assert np.array_equal(a.numpy(), b.numpy()) and np.array_equal(a.numpy(), c.numpy())
    gray = preprocess(img.convert("L"), 64)  # grey images become 3 equal channels before normalisation
    assert gray.shape == (3, 64, 64)


def test_corrupt_and_oversized_images_raise_named_errors(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(ImageError, match="bad.jpg"):
        load_image(str(bad))
    with pytest.raises(ImageError, match="over the limit of 100"):
        load_image(_fixed_image(20, 20, "RGB"), max_pixels=100)
    with pytest.raises(ImageError, match="uint8"):
        load_image(np.zeros((4, 4, 3), dtype=np.float32))
    pixels, errors = preprocess_batch([_fixed_image(30, 30, "RGB"), str(bad), _fixed_image(40, 30, "RGB")], 32)
    assert pixels.shape == (2, 3, 32, 32) and list(errors) == [1]
