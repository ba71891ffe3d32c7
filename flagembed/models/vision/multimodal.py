"""Visualized-BGE's sequence model: EVA patch tokens projected into BGE's embedding space, then BGE's encoder.

Sequence layout for an image (with or without text): ``[CLS, img_1..img_n, tok_1..]``. Image token ``i``
gets ``LN(visual_proj(patch_i) + pos[i])`` (BGE's position table and embedding LayerNorm; no word or
token-type embedding, no dropout); text token ``j >= 1`` gets BGE's own embedding at position ``n + j``.
The explicit contiguous positions are used for XLM-R (bge-m3) as well, although XLM-R's own ids start
after its padding row: that is how the released weights were trained (the "m3 position-id quirk").
Text without an image takes the plain :class:`~flagembed.models.TextEncoder` path.

The batching engine hands this module one padded id matrix per batch in which the image slots hold
``n`` placeholder ids right after CLS, so its token budget and mask already count the image tokens.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from flagembed.models.encoder import TextEncoder
from flagembed.models.vision.eva import EvaConfig, EvaVisionTower

MASK_MIN = torch.finfo(torch.float16).min  # the reference builds its additive mask in fp16


class VisualBGE(nn.Module):
    """BGE text encoder + EVA02 vision tower + ``visual_proj``; dense embeddings of text, images or both."""

    def __init__(self, text: TextEncoder, vision: EvaConfig) -> None:
        super().__init__()
        hidden = text.hidden_size
        if vision.width != hidden:
            raise ValueError(f"the vision width {vision.width} must equal the text hidden size {hidden}")
        self.text = text
        self.visual = EvaVisionTower(vision)
        self.visual_proj = nn.Linear(hidden, hidden)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))  # in the reference weight file; unused

    @property
    def num_image_tokens(self) -> int:
        """Image tokens in an inference sequence (all patches; the EVA CLS is dropped)."""
        return self.visual.config.num_patches

    @property
    def max_positions(self) -> int:
        """BGE position rows available to one image+text sequence (explicit ids from 0)."""
        return int(self.text.backbone.config.max_position_embeddings)

    def image_embeddings(self, pixels: torch.Tensor) -> torch.Tensor:
        """``[B, n, H]`` image-token input embeddings (``n`` = patches kept; all of them in eval mode)."""
        patches = self.visual(pixels)[:, 1:]
        proj = self.visual_proj(patches)
        emb = self.text.backbone.embeddings
        pos = emb.position_embeddings(torch.arange(1, proj.shape[1] + 1, device=proj.device))
        return emb.LayerNorm(proj + pos)

    def sequence_states(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, pixels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Last hidden states and mask of ``[CLS, image, text]`` sequences.

        ``input_ids``/``attention_mask`` hold ``N`` placeholder slots after CLS (``N`` = all patches);
        under patch dropout only the kept patches enter, and the text moves up to follow them.
        """
        slots = self.num_image_tokens
        img = self.image_embeddings(pixels)
        n = img.shape[1]
        text_ids = torch.cat([input_ids[:, :1], input_ids[:, 1 + slots :]], dim=1)
        text_mask = torch.cat([attention_mask[:, :1], attention_mask[:, 1 + slots :]], dim=1)
        t = text_ids.shape[1]
        if n + t > self.max_positions:
            raise ValueError(f"an image+text sequence of {n + t} tokens exceeds the {self.max_positions} positions")
        positions = torch.cat([torch.zeros(1, dtype=torch.long), torch.arange(n + 1, n + t)]).to(input_ids.device)
        emb = self.text.backbone.embeddings(
            input_ids=text_ids, token_type_ids=torch.zeros_like(text_ids), position_ids=positions[None]
        )
        seq = torch.cat([emb[:, :1], img.to(emb.dtype), emb[:, 1:]], dim=1)
        mask = torch.cat([text_mask[:, :1], torch.ones_like(text_mask[:, :1]).expand(-1, n), text_mask[:, 1:]], dim=1)
        additive = ((1.0 - mask[:, None, None, :].to(seq.dtype)) * MASK_MIN).to(seq.dtype)
        out = self.text.backbone.encoder(seq, attention_mask=additive)
        hidden = out[0] if not hasattr(out, "last_hidden_state") else out.last_hidden_state
        return hidden, mask

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        pixels: torch.Tensor | None = None,
        *,
        normalize: bool | None = None,
        truncate_dim: int | None = None,
    ) -> torch.Tensor:
        """Dense embeddings: text only when ``pixels`` is ``None``, else image (+ text) sequences."""
        if pixels is None:
            return self.text(input_ids, attention_mask, normalize=normalize, truncate_dim=truncate_dim)
        hidden, mask = self.sequence_states(input_ids, attention_mask, pixels)
        return self.text.embed(hidden, mask, normalize=normalize, truncate_dim=truncate_dim)


def image_sequence_ids(text_ids: list[int], slots: int, placeholder: int) -> list[int]:
    """Engine ids for an image (+ text) item: ``[CLS] + [placeholder] * slots + text_ids[1:]``."""
    return [text_ids[0], *([placeholder] * slots), *text_ids[1:]]
