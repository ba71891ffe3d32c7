"""TextEncoder: backbone + pooling + optional heads. Inference, training, evaluation and serving reuse it."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from flagembed._compat import dtype_kwargs, from_pretrained
from flagembed.models.heads import M3Heads, colbert_lengths, colbert_vectors, token_weights
from flagembed.models.loading import read_folder_config
from flagembed.models.pooling import PoolingMethod, check_pooling, finalize, pool
from flagembed.models.registry import ModelSpec, lookup

logger = logging.getLogger(__name__)

DEFAULT_MAX_LENGTH = 512


@dataclass(frozen=True)
class EncoderSettings:
    """Everything that decides what vector a text gets: recorded with indexes and evaluation results."""

    name: str
    path: str
    pooling: PoolingMethod
    normalize: bool
    max_length: int
    query_instruction: str | None = None
    query_instruction_format: str = "{}{}"
    passage_instruction: str | None = None
    passage_instruction_format: str = "{}{}"
    truncate_dim: int | None = None
    revision: str | None = None
    spec: ModelSpec | None = None

    def with_overrides(self, **overrides: Any) -> EncoderSettings:
        """A copy with the non-``None`` overrides applied."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})


def resolve_settings(
    name_or_path: str | os.PathLike[str],
    path: Path,
    *,
    pooling: str | None = None,
    normalize: bool | None = None,
    max_length: int | None = None,
    query_instruction: str | None = None,
    query_instruction_format: str | None = None,
    passage_instruction: str | None = None,
    passage_instruction_format: str | None = None,
    truncate_dim: int | None = None,
    revision: str | None = None,
) -> EncoderSettings:
    """Merge explicit arguments > the folder's sentence-transformers config > the registry > defaults."""
    name = os.fspath(name_or_path)
    spec = lookup(name)
    folder = read_folder_config(path)
    if spec is None:
        _note_unapplied_registry_row(name, folder, pooling, query_instruction)
    chosen_pooling = pooling or folder.pooling or (spec.pooling if spec else None) or "cls"
    if normalize is None:
        normalize = folder.normalize if folder.normalize is not None else (spec.normalize if spec else True)
    if max_length is None:
        max_length = folder.max_length or (spec.max_length if spec else None) or DEFAULT_MAX_LENGTH
    if truncate_dim is not None and truncate_dim < 1:
        raise ValueError(f"truncate_dim must be >= 1, got {truncate_dim}")
    return EncoderSettings(
        name=spec.name if spec else name,
        path=str(path),
        pooling=check_pooling(chosen_pooling),
        normalize=bool(normalize),
        max_length=int(max_length),
        query_instruction=_first(query_instruction, folder.query_prompt, spec.query_instruction if spec else None),
        query_instruction_format=query_instruction_format or (spec.query_instruction_format if spec else "{}{}"),
        passage_instruction=_first(
            passage_instruction, folder.passage_prompt, spec.passage_instruction if spec else None
        ),
        passage_instruction_format=passage_instruction_format or (spec.passage_instruction_format if spec else "{}{}"),
        truncate_dim=truncate_dim,
        revision=revision,
        spec=spec,
    )


def _note_unapplied_registry_row(name: str, folder: Any, pooling: str | None, query_instruction: str | None) -> None:
    """Say so when a local folder is named like a registered model whose settings it does not get.

    Registry rows apply to exact hub ids only (a folder's name proves nothing about its contents), so a
    ``./bge-small-en-v1.5`` copy without sentence-transformers files would silently lose the BGE query
    instruction; a warning names the row and how to get its settings.
    """
    from flagembed.models.registry import lookup_folder_name

    row = lookup_folder_name(name)
    if row is None:
        return
    lost_pooling = not (folder.pooling or pooling) and row.pooling != "cls"  # cls is the default anyway
    lost_instruction = bool(row.query_instruction) and folder.query_prompt is None and query_instruction is None
    if lost_pooling or lost_instruction:
        logger.warning(
            "folder %r is named like the registered model %r, but registry settings apply to hub ids only: pass "
            "pooling=%r, query_instruction=%r (or load it by its hub id) to use that model's settings",
            name, row.name, row.pooling, row.query_instruction,
        )  # fmt: skip


def _first(*values: str | None) -> str | None:
    return next((v for v in values if v is not None), None)


@dataclass
class MultiOutput:
    """What one forward pass with M3 heads returns (``None`` for outputs not asked for)."""

    dense: torch.Tensor | None = None  # (B, D)
    token_weights: torch.Tensor | None = None  # (B, L) relu(sparse_linear(h)); see heads.sparse_rows
    colbert: torch.Tensor | None = None  # (B, L-1, Dc), padding zeroed
    colbert_lengths: torch.Tensor | None = None  # (B,) real ColBERT vectors per text


class TextEncoder(nn.Module):
    """A transformer backbone whose token states are pooled into one vector per text.

    Heads (e.g. BGE-M3's sparse and ColBERT heads) attach here so that one forward pass serves
    every output; the loss never lives here.
    """

    def __init__(
        self,
        backbone: nn.Module,
        pooling: PoolingMethod = "cls",
        normalize: bool = True,
        truncate_dim: int | None = None,
        heads: M3Heads | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.pooling: PoolingMethod = check_pooling(pooling)
        self.normalize = normalize
        self.truncate_dim = truncate_dim
        self.heads = heads

    @property
    def hidden_size(self) -> int:
        return int(self.backbone.config.hidden_size)

    def hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        """Last-layer token states (B, L, H)."""
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        return out[0] if not hasattr(out, "last_hidden_state") else out.last_hidden_state

    def embed(
        self,
        hidden: torch.Tensor,
        attention_mask: torch.Tensor,
        *,
        normalize: bool | None = None,
        truncate_dim: int | None = None,
    ) -> torch.Tensor:
        """Dense vectors (float32) from token states: pool → truncate → normalize."""
        pooled = pool(hidden, attention_mask, self.pooling).float()
        dim = truncate_dim if truncate_dim is not None else self.truncate_dim
        return finalize(pooled, dim, self.normalize if normalize is None else normalize)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        *,
        normalize: bool | None = None,
        truncate_dim: int | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        """Dense embeddings (B, D) for a padded batch."""
        hidden = self.hidden_states(input_ids, attention_mask, **kwargs)
        return self.embed(hidden, attention_mask, normalize=normalize, truncate_dim=truncate_dim)

    def forward_multi(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        *,
        dense: bool = True,
        sparse: bool = False,
        colbert: bool = False,
        normalize: bool | None = None,
        truncate_dim: int | None = None,
    ) -> MultiOutput:
        """Dense, sparse token weights and ColBERT vectors from one backbone pass (needs ``heads``).

        Raises:
            ValueError: sparse or ColBERT output asked for but the encoder has no heads.
        """
        if (sparse or colbert) and self.heads is None:
            raise ValueError("this encoder has no M3 heads; load it with M3Embedder or attach models.M3Heads")
        hidden = self.hidden_states(input_ids, attention_mask)
        norm = self.normalize if normalize is None else normalize
        dim = truncate_dim if truncate_dim is not None else self.truncate_dim
        out = MultiOutput()
        if dense:
            out.dense = self.embed(hidden, attention_mask, normalize=norm, truncate_dim=dim)
        if sparse:
            out.token_weights = token_weights(hidden, self.heads.sparse_linear)  # type: ignore[union-attr]
        if colbert:
            out.colbert = colbert_vectors(
                hidden,
                attention_mask,
                self.heads.colbert_linear,  # type: ignore[union-attr]
                normalize=norm,
                truncate_dim=dim,
            )
            out.colbert_lengths = colbert_lengths(attention_mask)
        return out


def load_tokenizer(path: str | Path, trust_remote_code: bool = False) -> Any:
    """The fast tokenizer of a checkpoint folder."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path), use_fast=True, trust_remote_code=trust_remote_code)


def load_backbone(
    path: str | Path,
    dtype: torch.dtype | None = None,
    trust_remote_code: bool = False,
    **kwargs: Any,
) -> nn.Module:
    """``AutoModel`` from a local folder (safetensors preferred by transformers), in eval mode."""
    from transformers import AutoModel

    model = from_pretrained(AutoModel, str(path), trust_remote_code=trust_remote_code, **dtype_kwargs(dtype), **kwargs)
    return model.eval()
