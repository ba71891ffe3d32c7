"""``Visualized_BGE``: the reference's class name and arguments, on :class:`flagembed.VisualEmbedder`.

Differences from the reference (deliberate): it stays on the device it is given (CPU unless asked),
``encode`` takes lists as well as single items (one image with several texts pairs that image with
each text), text longer than the positions left after the image tokens is truncated (reported in
``last_truncated``) instead of raising an index error, and no torchvision/timm/einops/ftfy is needed.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from flagembed.inference.visual import VisualEmbedder


class Visualized_BGE:  # noqa: N801 - the reference's spelling
    """Visualized-BGE with the reference's constructor and ``encode(image=, text=)``.

    Args:
        model_name_bge: the BGE model (hub id or folder) giving config and tokenizer, e.g. ``BAAI/bge-m3``.
        model_weight: the released ``Visualized_base_en_v1.5.pth`` / ``Visualized_m3.pth`` (required, as in
            the reference), or a folder saved by :meth:`VisualEmbedder.save_pretrained`.
        normlized: L2-normalise embeddings (sic, the reference's spelling).
        sentence_pooling_method: ``cls`` or ``mean``.
        from_pretrained: a local folder with the BGE config + tokenizer to use instead of ``model_name_bge``.
        Other keyword arguments (``device``, ``dtype``, ``batch_size``…) go to :class:`VisualEmbedder`.
    """

    def __init__(
        self,
        model_name_bge: str | None = None,
        model_weight: str | os.PathLike[str] | None = None,
        normlized: bool = True,
        sentence_pooling_method: str = "cls",
        negatives_cross_device: bool = False,
        temperature: float = 0.02,
        from_pretrained: str | os.PathLike[str] | None = None,
        **kwargs: Any,
    ) -> None:
        if model_name_bge is None and from_pretrained is None:
            raise ValueError("model_name_bge is required (e.g. 'BAAI/bge-base-en-v1.5' or 'BAAI/bge-m3')")
        if model_weight is None:
            raise ValueError("model_weight is required: the path of Visualized_base_en_v1.5.pth or Visualized_m3.pth")
        text = os.fspath(from_pretrained if from_pretrained is not None else model_name_bge)  # type: ignore[arg-type]
        common = dict(pooling=sentence_pooling_method, normalize=normlized, **kwargs)
        if os.path.isdir(model_weight):
            self.model = VisualEmbedder(model_weight, **common)
        else:
            self.model = VisualEmbedder(text, model_weight=model_weight, **common)
        self.normlized = normlized
        self.temperature = temperature if normlized else 1.0  # the reference forces 1.0 without normalisation
        self.negatives_cross_device = negatives_cross_device
        self.tokenizer = self.model.tokenizer

    @property
    def last_truncated(self) -> int:
        return self.model.last_truncated

    def encode(self, image: Any = None, text: str | list[str] | None = None) -> torch.Tensor | None:
        """Image (+ text) → ``encode_mm``/``encode_image``; text alone → ``encode_text``; rows ``[B, D]``.

        Returns ``None`` when neither is given, as the reference does.
        """
        if image is None and text is None:
            return None
        if image is None:
            texts = [text] if isinstance(text, str) else list(text)  # type: ignore[arg-type]
            return torch.from_numpy(self.model.encode(texts))
        images = list(image) if isinstance(image, (list, tuple)) else [image]
        texts = None if text is None else ([text] if isinstance(text, str) else list(text))
        if texts is not None and len(images) == 1 and len(texts) > 1:
            images = images * len(texts)
        return torch.from_numpy(self.model.encode_images(images, texts))

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """Text-only embeddings (the plain BGE forward)."""
        return torch.from_numpy(self.model.encode(list(texts)))

    def save(self, folder: str | os.PathLike[str], overwrite: bool = False) -> None:
        """Write flagembed's own folder layout (loads back with ``model_weight=folder``)."""
        self.model.save_pretrained(folder, overwrite=overwrite)
