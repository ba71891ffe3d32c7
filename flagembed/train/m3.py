"""BGE-M3 unified fine-tuning on the one ``EmbedderTrainer``: the model the Trainer holds and its loss hook.

``M3TrainModel`` is the backbone plus the sparse and ColBERT heads (one forward pass gives all three
outputs through :meth:`flagembed.models.TextEncoder.forward_multi`, the code inference runs), saved as an
HF model folder with ``sparse_linear.pt`` / ``colbert_linear.pt`` beside it, so ``M3Embedder``,
``BGEM3FlagModel``, the indexes and the server load the result. ``M3Loss`` is the trainer's loss hook:
it embeds queries and passages, builds the three score matrices and calls
:func:`flagembed.train.m3_losses.unified_loss`; it counts forward calls for ``self_distill_start_step``
as the reference does (micro-batches, not optimizer steps).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from flagembed.models import M3Heads, TextEncoder, load_m3_heads, special_token_ids
from flagembed.train.config import EmbedderTrainingArguments
from flagembed.train.losses import embedder_loss, world_size
from flagembed.train.m3_losses import (
    M3LossParts,
    colbert_scores,
    dense_scores,
    flops_regularizer,
    lexical_vectors,
    sparse_scores,
    unified_loss,
)

logger = logging.getLogger(__name__)

HEAD_NAMES = ("sparse_linear", "colbert_linear")


class M3TrainModel(nn.Module):
    """Backbone + M3 heads as one module: ``forward`` returns every representation the unified loss needs.

    Args:
        encoder: a :class:`TextEncoder` with ``heads`` set (its pooling and normalization are the dense output's).
        vocab_size: columns of the lexical vectors.
        unused_ids: token ids whose lexical weight is always 0 (CLS, EOS, PAD, UNK).
    """

    saves_as_folder = True  # EmbedderTrainer._save calls save_folder instead of dumping a state dict

    def __init__(self, encoder: TextEncoder, vocab_size: int, unused_ids: list[int]) -> None:
        super().__init__()
        if encoder.heads is None:
            raise ValueError("M3TrainModel needs an encoder with M3 heads")
        self.encoder = encoder
        self.vocab_size = int(vocab_size)
        self.unused_ids = list(unused_ids)

    @property
    def backbone(self) -> nn.Module:
        return self.encoder.backbone

    @property
    def heads(self) -> M3Heads:
        return self.encoder.heads  # type: ignore[return-value]

    @property
    def config(self) -> Any:
        return self.backbone.config

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """Dense ``(B, D)``, lexical ``(B, V)``, ColBERT vectors ``(B, L-1, Dc)`` and their counts ``(B,)``."""
        out = self.encoder.forward_multi(input_ids, attention_mask, dense=True, sparse=True, colbert=True)
        lexical = lexical_vectors(out.token_weights, input_ids, attention_mask, self.vocab_size, self.unused_ids)  # type: ignore[arg-type]
        return {"dense": out.dense, "lexical": lexical, "colbert": out.colbert, "colbert_lengths": out.colbert_lengths}  # type: ignore[dict-item]

    def freeze_encoder(self) -> None:
        """``fix_encoder``: only the two heads keep ``requires_grad`` (FlagEmbedding #1074)."""
        for name, param in self.named_parameters():
            param.requires_grad_(any(h in name for h in HEAD_NAMES))

    def gradient_checkpointing_enable(self, **kwargs: Any) -> None:
        """Delegate to the backbone (the Trainer calls this for ``--gradient_checkpointing``)."""
        self.backbone.gradient_checkpointing_enable(**kwargs)

    def enable_input_require_grads(self) -> None:
        """Delegate to the backbone."""
        self.backbone.enable_input_require_grads()

    def save_folder(self, output_dir: str | Path) -> None:
        """The backbone as an HF folder (safetensors) plus ``sparse_linear.pt`` and ``colbert_linear.pt``."""
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        self.backbone.save_pretrained(str(output_dir), safe_serialization=True)
        self.heads.save(output_dir)


class M3Loss:
    """The unified loss as an ``EmbedderTrainer`` loss hook: ``hook(model, inputs) -> (loss, outputs)``."""

    def __init__(self, args: EmbedderTrainingArguments) -> None:
        self.args = args
        self.step = 0  # forward calls in training mode, as the reference's self.step
        self.last: dict[str, float] = {}

    def distilling(self) -> bool:
        """Whether this forward call adds self-distillation (``step > self_distill_start_step``)."""
        return bool(self.args.use_self_distill) and self.step > self.args.self_distill_start_step

    def __call__(self, model: nn.Module, inputs: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
        """Embed ``inputs["queries"]`` / ``inputs["passages"]`` with ``model`` and return the unified loss."""
        q = model(input_ids=inputs["queries"]["input_ids"], attention_mask=inputs["queries"]["attention_mask"])
        p = model(input_ids=inputs["passages"]["input_ids"], attention_mask=inputs["passages"]["attention_mask"])
        parts = self.loss(q, p, inputs.get("teacher_scores"), inputs.get("no_in_batch_neg"))
        if model.training:
            self.step += 1
            self.last = parts.as_floats()
        return parts.loss, {"q": q, "p": p, "parts": parts}

    def loss(
        self,
        q: dict[str, torch.Tensor],
        p: dict[str, torch.Tensor],
        teacher_scores: torch.Tensor | None = None,
        no_in_batch_neg: torch.Tensor | None = None,
    ) -> M3LossParts:
        """The unified loss of query/passage representations (``M3TrainModel.forward`` outputs)."""
        a = self.args
        tau = a.temperature
        group = p["dense"].shape[0] // q["dense"].shape[0]
        flagged = no_in_batch_neg if no_in_batch_neg is not None and bool(no_in_batch_neg.any()) else None
        s_dense = dense_scores(q["dense"], p["dense"], tau)
        dense_loss = None
        if a.negatives_cross_device and world_size() > 1:  # only the dense term sees other processes' passages
            dense_loss = embedder_loss(
                q["dense"],
                p["dense"],
                temperature=tau,
                teacher_scores=teacher_scores,
                kd_loss_type=a.kd_loss_type,  # type: ignore[arg-type]
                no_in_batch_neg=flagged,
                cross_device=True,
            )
        s_sparse = sparse_scores(q["lexical"], p["lexical"], tau)
        s_colbert = colbert_scores(q["colbert"], q["colbert_lengths"], p["colbert"], p["colbert_lengths"], tau)
        flops = None
        if a.sparse_flops_weight > 0:
            flops = a.sparse_flops_weight * (flops_regularizer(q["lexical"]) + flops_regularizer(p["lexical"]))
        return unified_loss(
            s_dense,
            s_sparse,
            s_colbert,
            group,
            dense_loss=dense_loss,
            teacher_scores=teacher_scores,
            kd_loss_type=a.kd_loss_type,  # type: ignore[arg-type]
            no_in_batch_neg=flagged,
            self_distill=self.distilling(),
            flops=flops,
        )


def build_m3_model(
    encoder: TextEncoder, checkpoint: str | Path, tokenizer: Any, colbert_dim: int, fix_encoder: bool
) -> M3TrainModel:
    """Attach the checkpoint's M3 heads to ``encoder`` (random ones, with a warning, when absent).

    Raises:
        ValueError: a head file that does not fit the backbone or ``colbert_dim``.
    """
    heads = load_m3_heads(checkpoint, encoder.hidden_size, colbert_dim, for_training=True)
    encoder.heads = heads.to(next(encoder.backbone.parameters()).dtype)
    vocab = max(int(encoder.backbone.config.vocab_size), len(tokenizer))
    model = M3TrainModel(encoder, vocab, special_token_ids(tokenizer))
    if fix_encoder:
        model.freeze_encoder()
    model.train()
    return model
