"""Visualized-BGE stage-2 fine-tuning (``t2it``, ``edit_image``) on the shared :class:`EmbedderTrainer`.

The loss is :func:`flagembed.train.losses.embedder_loss` (InfoNCE over in-batch and hard negatives,
temperature 0.02, optional cross-device negatives). As in the released recipe the text tower (BGE
embeddings, encoder, pooler) is frozen by default and the vision tower plus ``visual_proj`` train;
``patch_dropout`` (the B-16 config's 0.5) acts in training only. The output folder is the
:class:`~flagembed.inference.VisualEmbedder` layout, loadable with ``VisualEmbedder(output_dir)``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn
from transformers import HfArgumentParser

from flagembed.inference.visual import VisualEmbedder
from flagembed.models.vision.weights import save_visual_folder
from flagembed.train.config import EmbedderTrainingArguments
from flagembed.train.finetune import FinetuneResult
from flagembed.train.trainer import EmbedderTrainer, EpochCallback, LossCurveCallback
from flagembed.train.visual_data import (
    VisualCollator,
    VisualTrainDataset,
    embed_side,
    load_visual_rows,
)

logger = logging.getLogger(__name__)
DEFAULT_GROUP = {"t2it": 2, "edit_image": 4}  # the released recipe's group sizes


@dataclass
class VisualArguments:
    """Model and data options of ``flagembed finetune visual`` (reference names where there are any)."""

    model_name_or_path: str = field(metadata={"help": "VisualEmbedder folder, or the BGE model with model_weight."})
    train_data: list[str] = field(default_factory=list, metadata={"help": "JSONL files of query/pos/neg rows."})
    task_type: str = field(default="t2it", metadata={"help": "t2it (text → image+text) or edit_image."})
    model_weight: Optional[str] = field(default=None, metadata={"help": "A released Visualized_*.pth to start from."})
    vision: Optional[str] = field(
        default=None, metadata={"help": "EVA02-CLIP-B-16 / EVA02-CLIP-L-14: a random tower (train from scratch)."}
    )
    train_group_size: Optional[int] = field(default=None, metadata={"help": "Candidates per query (2 t2it, 4 edit)."})
    mmit_max_len: int = field(default=109, metadata={"help": "Max text tokens per item (the reference's 109)."})
    train_text_tower: bool = field(default=False, metadata={"help": "Also train BGE (frozen by default)."})
    train_vision_tower: bool = field(default=True, metadata={"help": "Train EVA + visual_proj."})
    patch_dropout: Optional[float] = field(default=None, metadata={"help": "Patch dropout in training (tower's own)."})
    max_rows: Optional[int] = field(default=None, metadata={"help": "Use at most this many rows."})


class VisualTrainer(EmbedderTrainer):
    """:class:`EmbedderTrainer` whose sides are text / image / image+text batches of a ``VisualBGE``."""

    def __init__(self, *args: Any, tokenizer: Any, folder_extra: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.folder_tokenizer = tokenizer
        self.folder_extra = folder_extra

    def compute_loss(
        self, model: nn.Module, inputs: dict[str, Any], return_outputs: bool = False, **kwargs: Any
    ) -> Any:
        """InfoNCE of query embeddings against their candidate groups (positive first)."""
        q = embed_side(model, inputs["queries"])
        c = embed_side(model, inputs["candidates"])
        loss = self.embedding_loss(q, c, inputs)
        return (loss, {"q": q, "p": c}) if return_outputs else loss

    def training_step(self, model: nn.Module, inputs: dict[str, Any], *args: Any, **kwargs: Any) -> torch.Tensor:
        if self.targs.sub_batch_size:
            raise ValueError("sub_batch_size (gradient cache) is not supported for visual training")
        return super().training_step(model, inputs, *args, **kwargs)

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Save the VisualEmbedder folder layout (text checkpoint + visual files)."""
        if not self.args.should_save:
            return
        model = self.accelerator.unwrap_model(self.model)
        save_visual_folder(model, self.folder_tokenizer, output_dir or self.args.output_dir, **self.folder_extra)


def build_visual_trainer(args: VisualArguments, training_args: EmbedderTrainingArguments) -> VisualTrainer:
    """The trainer :func:`finetune_visual` runs: model loaded, towers frozen as asked, data checked.

    Raises:
        ValueError: bad arguments or training data (file and line named).
    """
    if not args.train_data:
        raise ValueError("train_data is empty: pass at least one jsonl file")
    rows = load_visual_rows(args.train_data, args.task_type, args.max_rows)  # type: ignore[arg-type]
    group = args.train_group_size or DEFAULT_GROUP[args.task_type]
    dataset = VisualTrainDataset(rows, group, seed=training_args.seed)
    embedder = VisualEmbedder(
        args.model_name_or_path, model_weight=args.model_weight, vision=args.vision, device="cpu", dtype="fp32",
        pooling=training_args.sentence_pooling_method, normalize=training_args.normalize_embeddings,
    )  # fmt: skip
    model = embedder.model
    if args.patch_dropout is not None:
        model.visual.config = replace(model.visual.config, patch_dropout=args.patch_dropout).check()
    model.text.requires_grad_(args.train_text_tower)
    model.visual.requires_grad_(args.train_vision_tower)
    model.visual_proj.requires_grad_(args.train_vision_tower)
    model.logit_scale.requires_grad_(False)
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError("nothing to train: both train_text_tower and train_vision_tower are off")
    if getattr(training_args, "gradient_checkpointing", False):
        model.visual.gradient_checkpointing = True  # the ViT only, as the reference does
        training_args.gradient_checkpointing = False
    model.train()
    budget = embedder.text_budget(args.mmit_max_len)
    collator = VisualCollator(
        embedder.tokenizer, num_image_tokens=embedder.num_image_tokens, image_size=embedder.image_size,
        text_max_len=budget,
    )  # fmt: skip
    loss_curve = LossCurveCallback(plot=training_args.loss_plot)
    extra = {"pooling": embedder.settings.pooling, "normalize": embedder.settings.normalize}
    trainer = VisualTrainer(
        model=model, args=training_args, train_dataset=dataset, data_collator=collator,
        callbacks=[EpochCallback(dataset), loss_curve], encoder=model.text, tokenizer=embedder.tokenizer,
        folder_extra=extra,
    )  # fmt: skip
    trainer.loss_curve = loss_curve  # type: ignore[attr-defined]
    return trainer


def finetune_visual(args: VisualArguments, training_args: EmbedderTrainingArguments) -> FinetuneResult:
    """Train and save a VisualEmbedder folder into ``training_args.output_dir``.

    Raises:
        ValueError: bad arguments, training data, or a non-empty ``output_dir`` without ``overwrite_output_dir``.
    """
    from flagembed._io import check_output_dir

    check_output_dir(training_args.output_dir, overwrite=bool(training_args.overwrite_output_dir), what="output")
    trainer = build_visual_trainer(args, training_args)
    result = trainer.train()
    trainer.save_model()
    return FinetuneResult(
        output_dir=str(Path(training_args.output_dir)),
        global_step=int(result.global_step),
        train_loss=float(result.training_loss),
        loss_history=list(trainer.loss_curve.history),  # type: ignore[attr-defined]
    )


def parse_visual_args(argv: Sequence[str]) -> tuple[VisualArguments, EmbedderTrainingArguments]:
    """Parse ``--model_name_or_path ... --train_data ... --task_type t2it`` plus any HF training option.

    Raises:
        ValueError: unknown or missing arguments, or bad values.
    """
    parser = HfArgumentParser((VisualArguments, EmbedderTrainingArguments))

    def error(message: str) -> None:
        raise ValueError(message)

    parser.error = error  # type: ignore[method-assign]
    args, training_args, rest = parser.parse_args_into_dataclasses(args=list(argv), return_remaining_strings=True)
    if rest:
        raise ValueError(f"unknown arguments: {' '.join(rest)}")
    return args, training_args
