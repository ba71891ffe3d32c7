"""VisualEmbedder: Visualized-BGE's text, image and image+text embeddings in one space, batched by the engine.

Text-only inputs take :class:`Embedder`'s path unchanged (same vectors as the plain BGE checkpoint).
Images (paths, bytes, ``data:`` URLs, PIL images or uint8 arrays), alone or with a text, become
``[CLS, image tokens, text]`` sequences (:mod:`flagembed.models.vision.multimodal`) that run through
the same length-sorted, token-budgeted engine; images are decoded per batch, so a corpus never sits
in memory as pixels.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from flagembed._io import check_output_dir, staged_dir
from flagembed.engine import run_batches, tokenize
from flagembed.inference.embedder import Embedder
from flagembed.inference.inputs import check_unicode
from flagembed.models.vision import EVA02_B16, EVA02_L14, EvaConfig, ImageError, infer_config, preprocess
from flagembed.models.vision.multimodal import VisualBGE, image_sequence_ids
from flagembed.models.vision.weights import (
    is_visual_folder,
    load_reference_state_dict,
    load_visual_files,
    read_reference_file,
    read_visual_config,
    reference_state_dict,
    save_visual_folder,
    vision_config,
)

logger = logging.getLogger(__name__)

OnError = Literal["raise", "nan"]
VARIANTS: dict[str, EvaConfig] = {"bge-base-en-v1.5": EVA02_B16, "bge-m3": EVA02_L14}  # name substring → tower
VISION_NAMES: dict[str, EvaConfig] = {"EVA02-CLIP-B-16": EVA02_B16, "EVA02-CLIP-L-14": EVA02_L14}


class ImageBatchError(ImageError):
    """Some images of a call could not be read; the others' embeddings are kept in ``embeddings``.

    ``index`` is the first failed input, ``errors`` maps every failed input index to its error, and
    ``embeddings`` holds the full result with NaN rows for the failed inputs.
    """

    def __init__(self, errors: dict[int, ImageError], embeddings: np.ndarray) -> None:
        first = min(errors)
        super().__init__(
            f"image input {first}: {errors[first]} ({len(errors)} of {len(embeddings)} images failed; the other "
            "embeddings are in this error's .embeddings, NaN rows for the failed ones)",
            index=first,
        )
        self.errors = errors
        self.embeddings = embeddings


def variant_for(name: str) -> EvaConfig | None:
    """The released tower for a BGE name (by substring, as the reference selects it), else ``None``."""
    return next((cfg for key, cfg in VARIANTS.items() if key in name), None)


class VisualEmbedder(Embedder):
    """Dense embeddings of texts, images and image+text documents (Visualized-BGE).

    Three ways to load:
    - a folder saved by :meth:`save_pretrained` (text checkpoint + ``visual_config.json`` + ``visual.safetensors``);
    - ``model_weight=`` a released ``Visualized_base_en_v1.5.pth`` / ``Visualized_m3.pth`` (or the same
      layout as safetensors), with ``model_name_or_path`` giving the BGE config and tokenizer: every
      weight, text ones included, comes from the file, loaded strictly;
    - ``vision=`` an :class:`EvaConfig` or ``"EVA02-CLIP-B-16"``/``"EVA02-CLIP-L-14"``: a random tower on a text
      checkpoint (to train from scratch).

    Example:
        >>> m = VisualEmbedder("BAAI/bge-base-en-v1.5", model_weight="Visualized_base_en_v1.5.pth")
        >>> q = m.encode_images(["query.png"], texts=["make the sky blue"])
        >>> c = m.encode_images(["a.png", "b.png"])
        >>> scores = q @ c.T
    """

    def __init__(
        self,
        model_name_or_path: str | os.PathLike[str],
        *,
        model_weight: str | os.PathLike[str] | None = None,
        vision: EvaConfig | str | None = None,
        image_batch_size: int = 32,
        max_image_pixels: int | None = 89_478_485,
        image_workers: int = 4,
        **kwargs: Any,
    ) -> None:
        name = os.fspath(model_name_or_path)
        self._reference_state = read_reference_file(model_weight) if model_weight is not None else None
        folder_cfg = read_visual_config(name) if model_weight is None and is_visual_folder(name) else None
        if folder_cfg is not None:  # the folder's own settings unless the caller overrides them
            for key in ("pooling", "normalize"):
                if kwargs.get(key) is None:
                    kwargs[key] = folder_cfg.get(key)
        super().__init__(model_name_or_path, **kwargs)
        if len(self.devices) > 1:
            raise ValueError(f"VisualEmbedder runs on one device; got {[str(d) for d in self.devices]}")
        if self.backend != "torch":
            raise ValueError(f"VisualEmbedder runs on backend='torch' only, got {self.backend!r}")
        cfg = self._vision_config(name, folder_cfg, vision)
        self.model = VisualBGE(self.encoder, cfg)
        if folder_cfg is not None:
            load_visual_files(self.model, name)
        elif self._reference_state is not None:
            load_reference_state_dict(self.model, self._reference_state)
        else:
            self.model.visual.init_random(seed=0)
        self._reference_state = None
        self.model.to(self.device, dtype=self.dtype).eval()
        self.image_batch_size = image_batch_size
        self.max_image_pixels = max_image_pixels
        self.image_workers = max(1, image_workers)
        self.last_failed: dict[int, ImageError] = {}  # image errors of the latest call with on_error="nan"

    def _vision_config(self, name: str, folder_cfg: dict[str, Any] | None, vision: EvaConfig | str | None) -> EvaConfig:
        if folder_cfg is not None:
            return vision_config(folder_cfg)
        variant = variant_for(name)
        if self._reference_state is not None:
            prefix = "model_visual.visual."
            state = {k.removeprefix("module."): v for k, v in self._reference_state.items()}
            if f"{prefix}cls_token" not in state:
                raise ValueError("model_weight is not a Visualized-BGE state dict (no model_visual.visual.cls_token)")
            inferred = infer_config(state, prefix, variant.patch_dropout if variant else 0.0)
            if variant is not None and inferred != variant:
                raise ValueError(f"the weight file holds tower {inferred}, but {name!r} needs {variant}")
            return inferred
        if isinstance(vision, str):
            if vision not in VISION_NAMES:
                raise ValueError(f"unknown vision tower {vision!r}; valid: {', '.join(VISION_NAMES)}")
            return VISION_NAMES[vision]
        if isinstance(vision, EvaConfig):
            return vision.check()
        raise ValueError(
            f"{name!r} is not a VisualEmbedder folder: pass model_weight= (a Visualized_*.pth) or vision= "
            "(an EvaConfig or a tower name, for a randomly initialised tower)"
        )

    def _load_backbone(self, path: Any, trust_remote_code: bool) -> torch.nn.Module:
        """From the config only when the weight file brings the text weights (as the reference does)."""
        if self._reference_state is None:
            return super()._load_backbone(path, trust_remote_code)
        from transformers import AutoConfig, AutoModel

        config = AutoConfig.from_pretrained(str(path), trust_remote_code=trust_remote_code)
        return AutoModel.from_config(config, trust_remote_code=trust_remote_code).to(self.dtype).eval()

    # ------------------------------------------------------------------ properties
    @property
    def num_image_tokens(self) -> int:
        """Image tokens per sequence: (image_size / patch_size)²."""
        return self.model.num_image_tokens

    @property
    def image_size(self) -> int:
        return self.model.visual.config.image_size

    def text_budget(self, max_length: int | None = None) -> int:
        """Tokens (CLS and SEP included) a text beside an image may have: positions left after the image."""
        left = self.model.max_positions - self.num_image_tokens
        cap = self.passage_max_length if max_length is None else max_length
        return max(2, min(left, cap))

    # ------------------------------------------------------------------ public API
    def encode_images(
        self,
        images: Sequence[Any],
        texts: Sequence[str | None] | None = None,
        *,
        batch_size: int | None = None,
        max_length: int | None = None,
        normalize: bool | None = None,
        truncate_dim: int | None = None,
        on_error: OnError = "raise",
        show_progress: bool | None = None,
    ) -> np.ndarray:
        """Embed images, or (image, text) pairs when ``texts`` is given (``None`` entries: image only).

        Texts longer than :meth:`text_budget` are truncated (counted in ``last_truncated`` and logged).

        Raises:
            ImageBatchError: an image cannot be read (with ``on_error="raise"``); the message names its index
                and the error carries the other embeddings. With ``on_error="nan"`` failed rows are NaN and
                ``last_failed`` names them.
        """
        if on_error not in ("raise", "nan"):
            raise ValueError(f"unknown on_error {on_error!r}; valid: raise, nan")
        images = _as_list(images, "images")
        if texts is not None:
            texts = _as_list(texts, "texts")
            if len(texts) != len(images):
                raise ValueError(f"got {len(images)} images but {len(texts)} texts; pass one text (or None) per image")
        prompts = ["" if t is None else t for t in (texts or [None] * len(images))]
        for i, t in enumerate(prompts):
            if not isinstance(t, str):
                raise TypeError(f"texts[{i}] must be a string or None, got {type(t).__name__}")
            check_unicode(t, f"texts[{i}]")
        emb, errors = self._encode_image_items(
            images, prompts, batch_size=batch_size, max_length=max_length, normalize=normalize,
            truncate_dim=truncate_dim, show_progress=show_progress,
        )  # fmt: skip
        self.last_failed = errors
        if errors and on_error == "raise":
            raise ImageBatchError(errors, emb)
        return emb

    def encode_items(self, items: Sequence[Any], **kwargs: Any) -> np.ndarray:
        """Embed a mixed list: strings are texts; ``{"image": ..., "text": ...}`` dicts (either or both key).

        Text-only items take the plain text path, items with an image the image+text path; rows come
        back in input order. Keyword arguments go to :meth:`encode` / :meth:`encode_images`.
        """
        items = _as_list(items, "items")
        text_at, image_at, images, prompts, plain = [], [], [], [], []
        for i, item in enumerate(items):
            image, text = _split_item(item, i)
            if image is None:
                text_at.append(i)
                plain.append(text)
            else:
                image_at.append(i)
                images.append(image)
                prompts.append(text)
        text_keys = ("batch_size", "max_length", "normalize", "truncate_dim")
        text_kwargs = {k: v for k, v in kwargs.items() if k in text_keys}
        parts: list[tuple[list[int], np.ndarray]] = []
        failed: dict[int, ImageError] = {}
        error: ImageBatchError | None = None
        if image_at:
            try:
                parts.append((image_at, self.encode_images(images, prompts, **kwargs)))
            except ImageBatchError as exc:
                error, parts = exc, [(image_at, exc.embeddings)]
            failed = {image_at[j]: e for j, e in self.last_failed.items()}
        truncated = self.last_truncated
        if text_at:
            parts.append((text_at, np.asarray(self.encode(plain, **text_kwargs))))
            truncated += self.last_truncated
        self.last_truncated, self.last_failed = truncated, failed
        out = np.zeros((len(items), self.dim if not parts else parts[0][1].shape[1]), dtype=np.float32)
        for where, rows in parts:
            out[where] = rows
        if error is not None:
            raise ImageBatchError(failed, out)
        return out

    def save_pretrained(self, folder: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write the own folder layout (text checkpoint + vision files), replacing ``folder`` atomically."""
        check_output_dir(folder, overwrite=overwrite, what="model folder")
        with staged_dir(folder) as tmp:
            save_visual_folder(
                self.model, self.tokenizer, tmp, pooling=self.settings.pooling, normalize=self.settings.normalize
            )  # fmt: skip
        return Path(folder)

    def reference_state_dict(self) -> dict[str, torch.Tensor]:
        """The weights under the released ``Visualized_*.pth`` key names (for ``torch.save``)."""
        return reference_state_dict(self.model)

    # ------------------------------------------------------------------ internals
    def _encode_image_items(
        self,
        images: list[Any],
        prompts: list[str],
        *,
        batch_size: int | None,
        max_length: int | None,
        normalize: bool | None,
        truncate_dim: int | None,
        show_progress: bool | None,
    ) -> tuple[np.ndarray, dict[int, ImageError]]:
        dim = min(truncate_dim or self.dim, self.dim)
        if not images:
            self.last_truncated = 0
            return np.zeros((0, dim), dtype=np.float32), {}
        budget = self.text_budget(self._cap_length(max_length) if max_length is not None else None)
        tok = tokenize(self.tokenizer, prompts, budget)
        self.last_truncated = tok.num_truncated
        if tok.num_truncated:
            logger.warning(
                "%d of %d texts were truncated to %d tokens, the positions left after %d image tokens",
                tok.num_truncated, len(prompts), budget, self.num_image_tokens,
            )  # fmt: skip
        slots, placeholder = self.num_image_tokens, self.engine_config.pad_id
        ids = [image_sequence_ids(row, slots, placeholder) for row in tok.ids]
        config = self.engine_config
        config.batch_size = batch_size or self.image_batch_size
        errors: dict[int, ImageError] = {}
        pool = ThreadPoolExecutor(self.image_workers) if self.image_workers > 1 else None

        def load(i: int) -> torch.Tensor | ImageError:
            try:
                return preprocess(images[i], self.image_size, max_pixels=self.max_image_pixels)
            except ImageError as exc:
                exc.index = i
                return exc

        def step(batch: Any) -> torch.Tensor:
            where = batch.indices.tolist()
            loaded = list(pool.map(load, where)) if pool is not None else [load(i) for i in where]
            ok = [j for j, x in enumerate(loaded) if isinstance(x, torch.Tensor)]
            out = torch.full((len(where), dim), math.nan, dtype=torch.float32)
            for j, x in enumerate(loaded):
                if isinstance(x, ImageError):
                    errors[where[j]] = x
            if ok:
                sel = torch.tensor(ok, device=batch.input_ids.device)
                pixels = torch.stack([loaded[j] for j in ok]).to(self.device, dtype=self.dtype)
                emb = self.model(
                    batch.input_ids[sel], batch.attention_mask[sel], pixels, normalize=normalize,
                    truncate_dim=truncate_dim,
                )  # fmt: skip
                out[ok] = emb.float().cpu()
            return out

        show = self.show_progress if show_progress is None else show_progress
        try:
            with torch.inference_mode():
                emb = run_batches(ids, step, config, show_progress=show, desc="Embedding images")
        finally:
            if pool is not None:
                pool.shutdown()
        return emb, dict(sorted(errors.items()))


def _as_list(values: Any, what: str) -> list[Any]:
    if isinstance(values, (str, bytes, Mapping)) or not isinstance(values, Sequence):
        if isinstance(values, np.ndarray) and values.dtype == object:
            return list(values)
        raise TypeError(f"{what} must be a list, got {type(values).__name__}")
    return list(values)


def _split_item(item: Any, index: int) -> tuple[Any, str]:
    """``(image or None, text)`` of one :meth:`VisualEmbedder.encode_items` item."""
    if isinstance(item, str):
        check_unicode(item, f"items[{index}]")
        return None, item
    if isinstance(item, Mapping):
        unknown = sorted(set(item) - {"image", "text"})
        if unknown:
            raise ValueError(f"items[{index}] has unknown keys {unknown}; valid: image, text")
        image, text = item.get("image"), item.get("text")
        if image is None and text is None:
            raise ValueError(f"items[{index}] needs an 'image' or a 'text'")
        if text is not None and not isinstance(text, str):
            raise TypeError(f"items[{index}].text must be a string, got {type(text).__name__}")
        check_unicode(text or "", f"items[{index}].text")
        return image, text or ""
    raise TypeError(f"items[{index}] must be a string or an {{'image', 'text'}} dict, got {type(item).__name__}")
