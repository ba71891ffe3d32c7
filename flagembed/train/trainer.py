"""EmbedderTrainer: the HF ``Trainer`` with the contrastive loss, a gradient cache and model export.

Because it is the stock Trainer underneath, ``torchrun`` (multi-process / multi-GPU), DeepSpeed,
fp16/bf16 autocast, gradient checkpointing, gradient accumulation, checkpoints and
``resume_from_checkpoint`` all work as documented for ``transformers``.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import Trainer, TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from flagembed._io import save_json
from flagembed.models import TextEncoder
from flagembed.train.config import EmbedderTrainingArguments
from flagembed.train.export import write_sentence_transformers_config
from flagembed.train.llm_embedder import TaskTrainConfig, task_config
from flagembed.train.llm_embedder_losses import llm_embedder_loss
from flagembed.train.losses import embedder_loss
from flagembed.train.modeling import embed_batch, grad_cache_step, split_batch

logger = logging.getLogger(__name__)


class EmbedderTrainer(Trainer):
    """HF ``Trainer`` whose loss is :func:`flagembed.train.losses.embedder_loss` over pooled embeddings.

    Args:
        encoder: a :class:`TextEncoder` around the (unwrapped) backbone; only its pooling and
            normalization are used, the forward pass goes through the Trainer's (wrapped) model.
        export: keyword arguments for :func:`write_sentence_transformers_config` (pooling,
            normalize, dim, max_seq_length, prompts), written with every saved model.
        loss_hook: ``(model, inputs) -> (loss, outputs)`` replacing the dense loss (BGE-M3 unified
            fine-tuning, ``train.m3.M3Loss``); ``None`` for the dense contrastive loss.
        Other arguments are the HF ``Trainer``'s.
    """

    def __init__(
        self,
        *args: Any,
        encoder: TextEncoder,
        export: dict[str, Any] | None = None,
        loss_hook: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.encoder = encoder
        self.export = export
        self.loss_hook = loss_hook
        self.loss_history: list[tuple[int, float]] = []

    @property
    def targs(self) -> EmbedderTrainingArguments:
        """The training arguments (with the loss options)."""
        return self.args  # type: ignore[return-value]

    def embedding_loss(self, q: torch.Tensor, p: torch.Tensor, inputs: dict[str, Any]) -> torch.Tensor:
        """The configured loss of query/passage embeddings for this batch."""
        a = self.targs
        if a.loss_type == "llm_embedder":
            cfg = task_config(inputs.get("task")) if a.use_train_config else TaskTrainConfig()

            def pick(value: float | None, default: float) -> float:
                return default if value is None else value

            return llm_embedder_loss(
                q,
                p,
                temperature=a.temperature,
                teacher_scores=inputs.get("teacher_scores"),
                contrastive_weight=pick(cfg.contrastive_weight, a.contrastive_weight),
                distill_weight=pick(cfg.distill_weight, a.distill_weight),
                teacher_temperature=pick(cfg.teacher_temperature, a.teacher_temperature),
                student_temperature=a.student_temperature,
                stable_distill=cfg.stable_distill if a.use_train_config else a.stable_distill,
            )
        return embedder_loss(
            q,
            p,
            temperature=a.temperature,
            teacher_scores=inputs.get("teacher_scores"),
            kd_loss_type=a.kd_loss_type,  # type: ignore[arg-type]
            no_in_batch_neg=inputs.get("no_in_batch_neg"),
            cross_device=a.negatives_cross_device,
            mrl_dims=a.mrl_dims if a.use_mrl else None,
            normalize=self.encoder.normalize,
        )

    def compute_loss(
        self, model: nn.Module, inputs: dict[str, Any], return_outputs: bool = False, **kwargs: Any
    ) -> Any:
        """Embed queries and passages with ``model`` and return the contrastive loss."""
        if self.loss_hook is not None:
            loss, outputs = self.loss_hook(model, inputs)
            return (loss, outputs) if return_outputs else loss
        q = embed_batch(model, self.encoder, inputs["queries"])
        p = embed_batch(model, self.encoder, inputs["passages"])
        loss = self.embedding_loss(q, p, inputs)
        return (loss, {"q": q, "p": p}) if return_outputs else loss

    def training_step(self, model: nn.Module, inputs: dict[str, Any], *args: Any, **kwargs: Any) -> torch.Tensor:
        """The stock step, or a gradient-cache step over ``sub_batch_size`` chunks when set."""
        size = self.targs.sub_batch_size
        if not size:
            return super().training_step(model, inputs, *args, **kwargs)
        if self.is_deepspeed_enabled:
            raise NotImplementedError("sub_batch_size (gradient cache) is not supported with DeepSpeed yet")
        model.train()
        inputs = self._prepare_inputs(inputs)
        steps = max(1, self.args.gradient_accumulation_steps)

        def loss_fn(q: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
            return self.embedding_loss(q, p, inputs) / steps

        loss = grad_cache_step(
            lambda chunk: embed_batch(model, self.encoder, chunk),
            split_batch(inputs["queries"], size),
            split_batch(inputs["passages"], size),
            loss_fn,
            self.accelerator.backward,
            autocast=self.compute_loss_context_manager,
            no_sync=lambda: self.accelerator.no_sync(model),
        )
        return loss

    def _get_train_sampler(self, *args: Any, **kwargs: Any) -> Any:
        """Same-dataset mode: items are already shuffled batches in process-interleaved order."""
        if getattr(self.train_dataset, "batched", False):
            return torch.utils.data.SequentialSampler(self.train_dataset)
        return super()._get_train_sampler(*args, **kwargs)

    def _save(self, output_dir: str | None = None, state_dict: dict[str, Any] | None = None) -> None:
        """Models that save themselves as a folder (``saves_as_folder``, e.g. backbone + M3 heads) do so."""
        model = self.accelerator.unwrap_model(self.model)
        if not getattr(model, "saves_as_folder", False):
            return super()._save(output_dir, state_dict=state_dict)
        if not self.args.should_save:
            return None
        folder = output_dir or self.args.output_dir
        model.save_folder(folder)
        if self.processing_class is not None:
            self.processing_class.save_pretrained(folder)
        return None

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Save the HF model (and tokenizer), plus the sentence-transformers files for a full model."""
        super().save_model(output_dir, _internal_call=_internal_call)
        folder = output_dir or self.args.output_dir
        if self.export and self.args.should_save and (Path(folder) / "config.json").is_file():
            write_sentence_transformers_config(folder, **self.export)


class EpochCallback(TrainerCallback):
    """Tell the dataset which epoch starts, so negatives are re-drawn per epoch (and on resume)."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def on_epoch_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """Set the dataset's epoch from the trainer state."""
        self.dataset.set_epoch(math.floor((state.epoch or 0.0) + 1e-6))


class LossCurveCallback(TrainerCallback):
    """Collect logged losses; at the end write ``loss_history.json`` and ``loss.png`` to ``output_dir``."""

    def __init__(self, plot: bool = True) -> None:
        self.plot = plot
        self.history: list[dict[str, float]] = []

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        """Record the training loss of this logging step."""
        if logs and "loss" in logs:
            self.history.append({"step": state.global_step, "loss": float(logs["loss"])})

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """Write the loss history (and plot) on the main process."""
        if not state.is_world_process_zero or not self.history:
            return
        out = Path(args.output_dir)
        save_json(out / "loss_history.json", self.history)
        if self.plot:
            save_loss_plot(self.history, out / "loss.png")


def save_loss_plot(history: list[dict[str, float]], path: str | os.PathLike[str]) -> bool:
    """Plot loss against step as a PNG; returns ``False`` (and logs) when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning('matplotlib is not installed; no loss plot (pip install "flagembed[train]")')
        return False
    from flagembed._io import atomic_write

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([h["step"] for h in history], [h["loss"] for h in history], marker=".")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)
    return True
