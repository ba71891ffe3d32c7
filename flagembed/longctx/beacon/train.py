"""Train beacon parameters only (base frozen) on the HF Trainer, with the reference's recipe options.

The Trainer holds the stock HF model (beacon modules attached), so checkpoints are ``save_pretrained`` folders
with the reference's tensor names and ``beacon_*`` config keys, and ``resume_from_checkpoint`` works as usual.
The loss is the beacon loss of one sequence per row (``compute_loss``); evaluation uses it too (the reference's
``evaluate`` crashes, §3.10.3).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer, TrainingArguments

from flagembed._io import save_json
from flagembed.longctx.beacon.data import build_rows, read_jsonl
from flagembed.longctx.beacon.params import attach_beacon_params, freeze_base
from flagembed.longctx.beacon.planner import BeaconSettings
from flagembed.longctx.beacon.session import BeaconSession

logger = logging.getLogger(__name__)


@dataclass
class BeaconTrainConfig:
    """What ``flagembed beacon train`` accepts (reference names without the ``beacon_`` prefix)."""

    model: str
    train_data: list[str]
    output_dir: str
    window: int = 1024
    stride: int | None = None
    ratio: tuple[int, ...] = (2, 4, 8, 16, 32)
    ratio_mix: str = "step-random"
    pos: str = "interleave"
    attn: str = "full-coverage"
    sink_size: int = 0
    param: tuple[str, ...] = ("q", "k", "v")
    min_length: int | None = None  # default: window + 1
    max_length: int = 20000
    learning_rate: float = 5e-5
    num_train_epochs: float = 1.0
    max_steps: int = -1
    warmup_steps: int = 0
    weight_decay: float = 0.0
    gradient_checkpointing: bool = False
    logging_steps: int = 10
    save_steps: int = 500
    save_total_limit: int | None = None
    seed: int = 42
    bf16: bool = False
    eval_data: list[str] = field(default_factory=list)

    def settings(self) -> BeaconSettings:
        return BeaconSettings(
            window=self.window,
            stride=self.stride or self.window,
            ratio=tuple(self.ratio),
            ratio_mix=self.ratio_mix,
            pos=self.pos,
            attn=self.attn,
            sink_size=self.sink_size,
            param=tuple(self.param),
            seed=self.seed,
        )  # type: ignore[arg-type]


class _Rows(torch.utils.data.Dataset):
    def __init__(self, rows: list[dict[str, list[int]]]) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, list[int]]:
        return self.rows[i]


def collate(batch: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
    """Stack rows of one length (the beacon runtime takes no padding)."""
    lengths = {len(b["input_ids"]) for b in batch}
    if len(lengths) > 1:
        raise ValueError(f"batch rows of lengths {sorted(lengths)}: use per_device_train_batch_size 1")
    return {k: torch.tensor([b[k] for b in batch]) for k in ("input_ids", "labels")}


class BeaconTrainer(Trainer):
    """HF Trainer whose loss is the beacon loss; each row is a fresh sequence (new memory, new ratio draws)."""

    def __init__(self, *args: Any, beacon_settings: BeaconSettings, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.beacon_settings = beacon_settings

    def compute_loss(self, model: Any, inputs: dict[str, torch.Tensor], return_outputs: bool = False, **_: Any) -> Any:
        inner = getattr(model, "module", model)  # DDP wrapper
        settings = dataclasses.replace(self.beacon_settings, seed=self.beacon_settings.seed + self.state.global_step)
        session = BeaconSession(inner, settings, training=inner.training)
        session.gradient_checkpointing = bool(getattr(inner, "is_gradient_checkpointing", False))
        out = session.feed(inputs["input_ids"], inputs["labels"], logits="none")
        if out.loss_sum is None or not out.count:
            raise ValueError("a training row has no labelled raw token after its first window")
        loss = out.loss_sum / out.count
        return (loss, {"loss": loss}) if return_outputs else loss


def train_beacon(cfg: BeaconTrainConfig, resume_from_checkpoint: str | bool | None = None) -> Any:
    """Train; the final model (base + beacon tensors, ``beacon_*`` config) and tokenizer go to ``output_dir``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from flagembed._compat import from_pretrained

    settings = cfg.settings()
    tokenizer = from_pretrained(AutoTokenizer, cfg.model)
    model = from_pretrained(AutoModelForCausalLM, cfg.model, trust_remote_code=False)
    attach_beacon_params(model, settings)
    # a beacon checkpoint as the start (finetune after pretrain): its beacon tensors replace the copies
    from flagembed.longctx.beacon.params import load_beacon_tensors, resolve_folder

    folder = resolve_folder(cfg.model)
    if folder is not None:
        load_beacon_tensors(model, folder)
    trainable = freeze_base(model)
    logger.info("training %d beacon parameters", trainable)
    min_length = cfg.min_length or settings.window + 1
    if min_length <= settings.window:
        raise ValueError(f"min_length={min_length}: must exceed the window {settings.window} (no beacons otherwise)")
    rows = build_rows(tokenizer, read_jsonl(cfg.train_data), min_length, cfg.max_length)
    eval_rows = build_rows(tokenizer, read_jsonl(cfg.eval_data), min_length, cfg.max_length) if cfg.eval_data else None
    args = TrainingArguments(
        output_dir=cfg.output_dir,
        per_device_train_batch_size=1,
        per_device_eval_batch_size=1,
        learning_rate=cfg.learning_rate,
        num_train_epochs=cfg.num_train_epochs,
        max_steps=cfg.max_steps,
        warmup_steps=cfg.warmup_steps,
        weight_decay=cfg.weight_decay,
        gradient_checkpointing=cfg.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False} if cfg.gradient_checkpointing else None,
        logging_steps=cfg.logging_steps,
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        seed=cfg.seed,
        bf16=cfg.bf16,
        remove_unused_columns=False,
        prediction_loss_only=True,
        report_to=[],
        eval_strategy="epoch" if eval_rows else "no",
        use_cpu=not torch.cuda.is_available(),
    )
    trainer = BeaconTrainer(
        model=model,
        args=args,
        train_dataset=_Rows(rows),
        eval_dataset=_Rows(eval_rows) if eval_rows else None,
        data_collator=collate,
        beacon_settings=settings,
    )
    result = trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    model.config.update(settings.to_config())
    trainer.save_model(cfg.output_dir)
    tokenizer.save_pretrained(cfg.output_dir)
    save_json(Path(cfg.output_dir, "beacon_train_config.json"), dataclasses.asdict(cfg))
    return result
