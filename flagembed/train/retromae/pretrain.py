"""``pretrain_retromae``: continue pre-training a BERT-like encoder with RetroMAE on plain text.

Data: ``.json``/``.jsonl`` files (or folders of them) with one ``{"text": str}`` per line. Output:
``output_dir/encoder_model/`` (an ``AutoModelForMaskedLM`` folder + tokenizer; ``AutoModel`` loads its
encoder, and ``flagembed finetune embedder --model output_dir/encoder_model`` starts from it) and
``output_dir/decoder.pt``. The HF ``Trainer`` runs it (torchrun, DeepSpeed, fp16/bf16, checkpoints as
documented for transformers).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
from transformers import HfArgumentParser, Trainer, TrainingArguments

from flagembed._io import read_jsonl
from flagembed.train.retromae.collator import RetroMAECollator
from flagembed.train.retromae.model import RetroMAEModel

logger = logging.getLogger(__name__)


@dataclass
class RetroMAEArguments:
    """Model and data options of the reference's RetroMAE pre-training script."""

    model_name_or_path: str = field(default="bert-base-uncased", metadata={"help": "MLM checkpoint to start from."})
    tokenizer_name: Optional[str] = field(default=None, metadata={"help": "Tokenizer folder if not the model's."})
    train_data: list[str] = field(default_factory=list, metadata={"help": "json/jsonl files or folders ({text})."})
    max_seq_length: int = field(default=512, metadata={"help": "Max tokens per text."})
    encoder_mlm_probability: float = field(default=0.3, metadata={"help": "Encoder whole-word mask ratio."})
    decoder_mlm_probability: float = field(default=0.5, metadata={"help": "Decoder per-row mask ratio."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow custom modelling code."})


@dataclass
class RetroMAEResult:
    """Where the encoder went and how training ended."""

    output_dir: str
    encoder_dir: str
    global_step: int
    train_loss: float
    loss_history: list[dict[str, float]]


class TextDataset(torch.utils.data.Dataset):
    """``{"text": str}`` records from files/folders (blank texts dropped)."""

    def __init__(self, paths: Sequence[str]) -> None:
        if not paths:
            raise ValueError("train_data is empty: pass at least one json/jsonl file or folder")
        self.texts: list[str] = []
        for p in paths:
            path = Path(p)
            files = sorted(f for f in path.rglob("*") if f.suffix in (".json", ".jsonl")) if path.is_dir() else [path]
            if not files or not all(f.is_file() for f in files):
                raise FileNotFoundError(f"training data not found: {path}")
            for file in files:
                for i, rec in enumerate(read_jsonl(file)):
                    text = rec.get("text") if isinstance(rec, dict) else None
                    if not isinstance(text, str):
                        raise ValueError(f"{file}:{i + 1}: 'text' must be a string")
                    if text.strip():
                        self.texts.append(text)
        if not self.texts:
            raise ValueError(f"no texts in {list(paths)}")

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, i: int) -> dict[str, str]:
        return {"text": self.texts[i]}


class RetroMAETrainer(Trainer):
    """The stock Trainer; it only saves the model as ``encoder_model/`` + ``decoder.pt`` (not a tied state dict)."""

    def _save(self, output_dir: str | None = None, state_dict: dict[str, Any] | None = None) -> None:
        if not self.args.should_save:
            return
        folder = output_dir or self.args.output_dir
        self.accelerator.unwrap_model(self.model).save_folder(folder)
        if self.processing_class is not None:
            self.processing_class.save_pretrained(str(Path(folder) / "encoder_model"))


def parse_retromae_args(argv: Sequence[str]) -> tuple[RetroMAEArguments, TrainingArguments]:
    """Parse reference-style arguments (``--model_name_or_path ... --train_data ... --output_dir ...``).

    Raises:
        ValueError: unknown or missing arguments.
    """
    parser = HfArgumentParser((RetroMAEArguments, TrainingArguments))

    def error(message: str) -> None:
        raise ValueError(message)

    parser.error = error  # type: ignore[method-assign]
    args, targs, rest = parser.parse_args_into_dataclasses(args=list(argv), return_remaining_strings=True)
    if rest:
        raise ValueError(f"unknown arguments: {' '.join(rest)}")
    return args, targs


def pretrain_retromae(args: RetroMAEArguments, training_args: TrainingArguments) -> RetroMAEResult:
    """Run RetroMAE pre-training and save ``encoder_model/``.

    Raises:
        ValueError: bad arguments or data; FileNotFoundError: missing data.
    """
    from transformers import AutoModelForMaskedLM

    from flagembed._compat import from_pretrained
    from flagembed.models import HubOptions, load_tokenizer, open_checkpoint, resolve_model_path

    if args.max_seq_length < 2:
        raise ValueError(f"max_seq_length must be >= 2, got {args.max_seq_length}")
    dataset = TextDataset(args.train_data)  # data errors before any model is loaded
    hub = HubOptions(trust_remote_code=args.trust_remote_code)
    path = open_checkpoint(args.model_name_or_path, trust_remote_code=args.trust_remote_code).path
    tok_path = resolve_model_path(args.tokenizer_name, hub, kind="tokenizer") if args.tokenizer_name else path
    tokenizer = load_tokenizer(tok_path, trust_remote_code=args.trust_remote_code)
    collator = RetroMAECollator(
        tokenizer, args.max_seq_length, args.encoder_mlm_probability, args.decoder_mlm_probability, training_args.seed
    )
    lm = from_pretrained(AutoModelForMaskedLM, str(path), trust_remote_code=args.trust_remote_code)
    model = RetroMAEModel(lm)
    training_args.remove_unused_columns = False
    history: list[dict[str, float]] = []

    from transformers import TrainerCallback

    class _Losses(TrainerCallback):
        def on_log(self, a: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **kw: Any) -> None:
            if logs and "loss" in logs:
                history.append({"step": state.global_step, "loss": float(logs["loss"])})

    trainer = RetroMAETrainer(
        model=model,
        args=training_args,
        train_dataset=dataset,
        data_collator=collator,
        processing_class=tokenizer,
        callbacks=[_Losses()],
    )
    result = trainer.train()
    trainer.save_model()
    return RetroMAEResult(
        output_dir=str(training_args.output_dir),
        encoder_dir=str(Path(training_args.output_dir) / "encoder_model"),
        global_step=int(result.global_step),
        train_loss=float(result.training_loss),
        loss_history=history,
    )
