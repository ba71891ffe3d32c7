"""Context extension on the HF Trainer: RoPE change + (Q)LoRA + chunked CE (the LongLLM QLoRA recipe, any causal LM).

Recipe (LONG_CONTEXT.md §7): raise the RoPE base (or pick a scaling type) with :func:`set_rope`, optionally load
the base in 4-bit NF4 with double quantisation, put LoRA adapters on the attention projections and train the
input embeddings fully (``modules_to_save``), checkpoint activations, and compute the LM loss chunk by chunk so
the ``[T, vocab]`` logits never exist. Chat rows are labelled on assistant turns only; text rows on every token.

Output layout: ``<output_dir>/checkpoint-N`` (Trainer, for ``resume``), ``<output_dir>/adapter`` (the peft
adapter, tokenizer and ``longctx.json`` with the RoPE settings) and, with ``merge``, ``<output_dir>/merged``:
a full model folder that loads with plain ``AutoModelForCausalLM.from_pretrained``.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from flagembed._io import read_jsonl, save_json, staged_dir
from flagembed.longctx.data import PadCollator, build_rows
from flagembed.longctx.loading import load_causal_lm, parse_dtype
from flagembed.longctx.loss import chunked_causal_lm_loss
from flagembed.longctx.rope import set_rope
from flagembed.models import latest_checkpoint

logger = logging.getLogger(__name__)
SETTINGS_FILE = "longctx.json"


@dataclass
class ExtendConfig:
    """Every knob of the extension run (also the CLI schema). Defaults follow the reference recipe."""

    model: str
    data: Sequence[str]
    output_dir: str
    max_length: int = 8192
    rope_theta: float | None = None
    rope_type: str = "default"
    rope_factor: float | None = None
    rope_original_max: int | None = None
    lora_rank: int = 32
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    lora_targets: Sequence[str] = ("q_proj", "k_proj", "v_proj", "o_proj")
    train_embeddings: bool = True
    modules_to_save: Sequence[str] = ()
    load_in_4bit: bool = False
    dtype: str = "auto"
    gradient_checkpointing: bool = True
    chunk_size: int = 4096
    learning_rate: float = 5e-5
    epochs: float = 1.0
    max_steps: int = -1
    batch_size: int = 1
    grad_accum: int = 1
    warmup_ratio: float = 0.0
    group_by_length: bool = True
    pack: bool = False
    save_steps: int | None = None
    logging_steps: int = 5
    seed: int = 42
    resume: bool = False
    merge: bool = False
    trust_remote_code: bool = False
    extra: dict[str, Any] = field(default_factory=dict)  # further TrainingArguments

    def rope(self) -> dict[str, Any] | None:
        """The :func:`set_rope` keywords of this run (None: keep the model's RoPE)."""
        if self.rope_theta is None and self.rope_type == "default":
            return None
        out: dict[str, Any] = {"theta": self.rope_theta, "rope_type": self.rope_type}
        if self.rope_factor is not None:
            out["factor"] = self.rope_factor
        if self.rope_original_max is not None:
            out["original_max"] = self.rope_original_max
        return out

    def check(self) -> None:
        """Raise ValueError for an impossible setting, before anything loads."""
        for name in ("max_length", "lora_rank", "chunk_size", "batch_size", "grad_accum"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.lora_dropout < 1:
            raise ValueError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if not self.lora_targets:
            raise ValueError("lora_targets must name at least one module")
        for i, path in enumerate(self.data):
            if not Path(path).is_file():
                raise FileNotFoundError(f"data[{i}]: {path} is not a file")


def lora_config(cfg: ExtendConfig) -> Any:
    """The peft ``LoraConfig`` of the run: rank/alpha/dropout on the targets, embeddings trained in full."""
    from peft import LoraConfig

    keep = list(cfg.modules_to_save) + (["embed_tokens"] if cfg.train_embeddings else [])
    return LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=list(cfg.lora_targets), modules_to_save=keep or None, bias="none",
                      task_type="CAUSAL_LM")


def add_lora(model: Any, cfg: ExtendConfig) -> Any:
    """Wrap ``model`` with LoRA (after k-bit preparation for 4-bit bases); gradient checkpointing as configured."""
    from peft import get_peft_model, prepare_model_for_kbit_training

    if cfg.load_in_4bit:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing,
                                                gradient_checkpointing_kwargs={"use_reentrant": False})
    elif cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    model.config.use_cache = False
    return get_peft_model(model, lora_config(cfg))


def count_trainable(model: Any) -> int:
    """Number of parameters that receive gradients."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _trainer_class() -> type:
    from transformers import Trainer

    class ChunkedLossTrainer(Trainer):
        """The HF Trainer with the LM loss chunked over the sequence (no full logits)."""

        chunk_size = 4096

        def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                         num_items_in_batch: Any = None, **kwargs: Any) -> Any:
            base = model.get_base_model() if hasattr(model, "get_base_model") else model
            while not hasattr(base, "get_decoder") and hasattr(base, "module"):  # DDP / wrappers
                base = base.module
            hidden = base.get_decoder()(input_ids=inputs["input_ids"], attention_mask=inputs.get("attention_mask"),
                                        use_cache=False)[0]
            # with loss kwargs the Trainer expects the sum over the accumulated batch divided by its token count
            scale = num_items_in_batch if getattr(self, "model_accepts_loss_kwargs", False) else None
            loss = chunked_causal_lm_loss(hidden, base.get_output_embeddings(), inputs["labels"],
                                          chunk_size=self.chunk_size, num_items=scale)
            return (loss, None) if return_outputs else loss

    return ChunkedLossTrainer


def training_arguments(cfg: ExtendConfig) -> Any:
    """``TrainingArguments`` for the run, spelling length grouping as this transformers version wants."""
    from transformers import TrainingArguments

    params = inspect.signature(TrainingArguments.__init__).parameters
    dtype = parse_dtype(cfg.dtype)
    kwargs: dict[str, Any] = dict(
        output_dir=cfg.output_dir, per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum, learning_rate=cfg.learning_rate, num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps, lr_scheduler_type="linear",
        logging_steps=cfg.logging_steps, save_strategy="steps" if cfg.save_steps else "epoch",
        save_steps=cfg.save_steps or 500, report_to="none", remove_unused_columns=False, seed=cfg.seed,
        bf16=dtype == torch.bfloat16 and torch.cuda.is_available(), fp16=dtype == torch.float16,
        use_cpu=not torch.cuda.is_available(), dataloader_num_workers=0, disable_tqdm=True,
    )
    if cfg.warmup_ratio:  # 5.x folds the ratio into warmup_steps (a float < 1)
        kwargs["warmup_ratio" if "warmup_ratio" in params else "warmup_steps"] = cfg.warmup_ratio
    if cfg.group_by_length:
        if "train_sampling_strategy" in params:  # transformers >= 5.x
            kwargs["train_sampling_strategy"] = "group_by_length"
        elif "group_by_length" in params:
            kwargs["group_by_length"] = True
    kwargs.update(cfg.extra)
    return TrainingArguments(**kwargs)


class _Rows(torch.utils.data.Dataset):
    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.rows[i]


def extend(cfg: ExtendConfig) -> dict[str, Any]:
    """Run the extension: train the adapter, write ``adapter/`` (and ``merged/``); returns a JSON-able summary.

    Raises:
        ValueError: a bad setting, or no training example left after dropping over-long rows.
        FileNotFoundError: a data file or the model is missing.
    """
    cfg.check()
    rope = cfg.rope()
    model, tokenizer = load_causal_lm(cfg.model, dtype=cfg.dtype, rope=rope, load_in_4bit=cfg.load_in_4bit,
                                      trust_remote_code=cfg.trust_remote_code)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    rows = [row for path in cfg.data for row in read_jsonl(path)]
    examples, stats = build_rows(tokenizer, rows, cfg.max_length, pack=cfg.pack)
    if not examples:
        raise ValueError(f"no training example fits in max_length {cfg.max_length} ({stats})")
    model.train()
    model = add_lora(model, cfg)
    trainable = count_trainable(model)
    trainer_cls = _trainer_class()
    trainer_cls.chunk_size = cfg.chunk_size
    trainer = trainer_cls(model=model, args=training_arguments(cfg), train_dataset=_Rows(examples),
                          data_collator=PadCollator(tokenizer.pad_token_id))
    resume = None
    if cfg.resume:
        last = latest_checkpoint(Path(cfg.output_dir))
        resume = str(last) if last is not None else None
        if resume is None:
            logger.warning("resume: no checkpoint in %s, starting from scratch", cfg.output_dir)
    result = trainer.train(resume_from_checkpoint=resume)
    settings = {"base_model": str(cfg.model), "rope": rope, "max_length": cfg.max_length,
                "config": {k: v for k, v in asdict(cfg).items() if k != "extra"}}
    adapter_dir = Path(cfg.output_dir) / "adapter"
    with staged_dir(adapter_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        save_json(tmp / SETTINGS_FILE, settings)
    summary = {"examples": len(examples), **stats, "trainable_parameters": trainable,
               "train_loss": float(result.training_loss), "steps": int(result.global_step),
               "adapter": str(adapter_dir), "resumed_from": resume}
    if cfg.merge:
        del trainer, model
        summary["merged"] = str(merge_adapter(adapter_dir, Path(cfg.output_dir) / "merged", dtype=cfg.dtype,
                                              trust_remote_code=cfg.trust_remote_code))
    return summary


def merge_adapter(adapter_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str], base_model: str | None = None,
                  dtype: str = "auto", trust_remote_code: bool = False) -> Path:
    """Fold a LoRA adapter into its base (with the run's RoPE) and write a plain full model folder.

    The base is loaded unquantised (merging into 4-bit weights would round the update away); the written
    ``config.json`` carries the RoPE in both the 5.x and the 4.x fields.
    """
    from peft import PeftModel

    adapter_dir = Path(adapter_dir)
    settings_path = adapter_dir / SETTINGS_FILE
    settings = json.loads(settings_path.read_text(encoding="utf-8")) if settings_path.is_file() else {}
    base_name = base_model or settings.get("base_model")
    if base_name is None:
        raise ValueError(f"{adapter_dir} has no {SETTINGS_FILE}; pass base_model")
    rope = settings.get("rope")
    base, tokenizer = load_causal_lm(base_name, dtype=dtype, rope=rope, trust_remote_code=trust_remote_code)
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    if rope:
        set_rope(merged.config, **rope)
    merged.config.use_cache = True
    with staged_dir(out_dir) as tmp:
        merged.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    return Path(out_dir)


__all__ = ["ExtendConfig", "add_lora", "count_trainable", "extend", "lora_config", "merge_adapter",
           "training_arguments"]
