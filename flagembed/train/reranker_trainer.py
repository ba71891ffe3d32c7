"""``finetune_reranker``: cross-encoder, LLM (yes-logit, LoRA) and layerwise rerankers on the HF ``Trainer``.

The Trainer holds a :class:`~flagembed.train.reranker_model.RerankerScorer`; the loss is
:func:`~flagembed.train.reranker_losses.reranker_loss` (group softmax CE, target 0, plus soft-CE KD) or
:func:`~flagembed.train.reranker_losses.layerwise_loss`. Saved folders load in ``Reranker`` /
``LLMReranker`` / ``LayerwiseReranker`` (with LoRA: the adapter in ``output_dir`` and the merged model in
``output_dir/merged_model``, the reference's layout).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import Trainer

from flagembed.models import HubOptions, load_tokenizer, open_checkpoint, resolve_model_path
from flagembed.train.data import load_train_files
from flagembed.train.output_dir import check_output_dir, run_key, write_run_marker
from flagembed.train.reranker_config import (
    RerankerDataArguments,
    RerankerModelArguments,
    RerankerTrainingArguments,
    check_reranker_data_args,
)
from flagembed.train.reranker_data import (
    DECODER_PASSAGE_INSTRUCTION,
    DECODER_QUERY_INSTRUCTION,
    RerankerCollator,
    RerankerTrainDataset,
    split_examples,
)
from flagembed.train.reranker_losses import layerwise_loss, reranker_loss
from flagembed.train.reranker_model import RerankerScorer, build_layer_heads, save_reranker, yes_id_for
from flagembed.train.trainer import EpochCallback, LossCurveCallback

logger = logging.getLogger(__name__)

MERGED_DIR = "merged_model"


class RerankerTrainer(Trainer):
    """HF ``Trainer`` whose model is a ``RerankerScorer`` and whose saves are reranker folders."""

    def compute_loss(
        self, model: nn.Module, inputs: dict[str, Any], return_outputs: bool = False, **kwargs: Any
    ) -> Any:
        """Score every pair of the batch and return the group loss."""
        scores = model(**inputs["pair"])
        group, teacher = int(inputs["group_size"]), inputs.get("teacher_scores")
        if scores.ndim == 2:  # layerwise: one column per scored layer, shallow to deep
            loss = layerwise_loss([scores[:, j] for j in range(scores.shape[1])], group, teacher)
        else:
            loss = reranker_loss(scores, group, teacher)
        return (loss, {"scores": scores}) if return_outputs else loss

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Write a reranker folder (checkpoints too) on the main process."""
        if self.args.should_save:
            save_reranker(self.model, self.processing_class, output_dir or self.args.output_dir)


@dataclass
class RerankerFinetuneResult:
    """Where the model went and how training ended."""

    output_dir: str
    global_step: int
    train_loss: float
    loss_history: list[dict[str, float]]
    merged_dir: str | None = None
    calibration: dict[str, Any] | None = None

    @property
    def model_dir(self) -> str:
        """The self-contained model folder (the merged one with LoRA)."""
        return self.merged_dir or self.output_dir


def _apply_lora(model: nn.Module, args: RerankerModelArguments) -> nn.Module:
    try:
        from peft import LoraConfig, TaskType, get_peft_model
    except ImportError as exc:
        raise ImportError('LoRA needs peft: pip install "flagembed[train]"') from exc
    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    targets = [t for t in args.target_modules if t in names]
    if not targets:
        raise ValueError(f"none of target_modules {args.target_modules} exist in the model; some: {sorted(names)[:20]}")
    config = LoraConfig(
        task_type=TaskType.CAUSAL_LM,
        r=args.lora_rank,
        lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout,
        target_modules=targets,
    )
    return get_peft_model(model, config)


def load_scorer(model_args: RerankerModelArguments) -> tuple[RerankerScorer, Any, Path]:
    """The trainable scorer, its tokenizer and the checkpoint folder.

    Raises:
        ValueError: a checkpoint with several labels (encoder) or bad layerwise settings.
    """
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    from flagembed._compat import from_pretrained

    remote = model_args.trust_remote_code
    hub = HubOptions(cache_dir=model_args.cache_dir, token=model_args.token, trust_remote_code=remote)
    path = open_checkpoint(
        model_args.model_name_or_path, cache_dir=hub.cache_dir, token=hub.token, trust_remote_code=remote
    ).path
    tok_name = model_args.tokenizer_name
    tok_path = resolve_model_path(tok_name, hub, kind="tokenizer") if tok_name else path
    tokenizer = load_tokenizer(tok_path, trust_remote_code=remote)
    kind = model_args.model_type
    if kind == "encoder":
        model = from_pretrained(AutoModelForSequenceClassification, str(path), num_labels=1, trust_remote_code=remote)
        return RerankerScorer(model.train(), "encoder"), tokenizer, Path(path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    model = from_pretrained(AutoModelForCausalLM, str(path), trust_remote_code=remote)
    yes_id = yes_id_for(tokenizer)
    heads, layers = None, None
    if kind == "layerwise":
        heads, layers = build_layer_heads(path, model, yes_id, model_args.start_layer, model_args.head_multi)
    if model_args.use_lora:
        model = _apply_lora(model, model_args)
    return RerankerScorer(model.train(), kind, yes_id=yes_id, heads=heads, layers=layers), tokenizer, Path(path)


def finetune_reranker(
    model_args: RerankerModelArguments,
    data_args: RerankerDataArguments,
    training_args: RerankerTrainingArguments,
) -> RerankerFinetuneResult:
    """Fine-tune a reranker with the reference's recipe and save a loadable folder.

    With ``data_args.calibration_ratio > 0`` that share of the queries is held out and, after training, a
    sigmoid ``scale``/``bias`` is fitted on all their (query, passage) pairs and written next to the model
    (``reranker_calibration.json``), so ``normalize=True`` returns calibrated probabilities.

    Raises:
        ValueError: bad arguments, a foreign non-empty ``output_dir``, or malformed training data.
    """
    check_reranker_data_args(data_args)
    key = run_key(model_args.model_name_or_path, data_args.train_data)
    check_output_dir(
        training_args.output_dir,
        key,
        resume=False,
        overwrite=bool(getattr(training_args, "overwrite_output_dir", False)),
        main_process=training_args.should_save,
    )
    no_instructions = (data_args.query_instruction_for_rerank, data_args.passage_instruction_for_rerank) == (None, None)
    if model_args.model_type != "encoder" and no_instructions:  # the LLMReranker's inputs: "A: q", "B: p"
        data_args = replace(
            data_args,
            query_instruction_for_rerank=DECODER_QUERY_INSTRUCTION,
            passage_instruction_for_rerank=DECODER_PASSAGE_INSTRUCTION,
        )
    files = load_train_files(data_args.train_data, data_args)  # type: ignore[arg-type]
    for f in files:
        for i, ex in enumerate(f.examples):
            for name in ("query_prompt", "passage_prompt"):
                if ex.get(name) is not None and not isinstance(ex[name], str):
                    raise ValueError(f"{f.path}: example {i}: {name!r} must be a string")
    train, held_out = split_examples(files, data_args.calibration_ratio, training_args.seed)
    scorer, tokenizer, _ = load_scorer(model_args)
    dataset = RerankerTrainDataset(train, data_args, seed=training_args.seed)
    collator = RerankerCollator(tokenizer, data_args, model_args.model_type)
    loss_curve = LossCurveCallback(plot=training_args.loss_plot)
    trainer = RerankerTrainer(
        model=scorer,
        args=training_args,
        train_dataset=dataset,
        data_collator=collator,
        processing_class=tokenizer,
        callbacks=[EpochCallback(dataset), loss_curve],
    )
    if trainer.args.should_save:
        write_run_marker(training_args.output_dir, key)
    result = trainer.train()
    trainer.save_model()
    merged = None
    if model_args.use_lora and model_args.save_merged_lora_model and trainer.args.should_save:
        merged = str(Path(training_args.output_dir) / MERGED_DIR)
        lm = trainer.accelerator.unwrap_model(trainer.model).backbone.merge_and_unload()
        scorer.backbone = lm
        save_reranker(scorer, tokenizer, merged)
    calibration = None
    if held_out and trainer.args.should_save:
        from flagembed.train.reranker_calibration import calibrate_on_examples

        folders = [training_args.output_dir] + ([merged] if merged else [])
        calibration = calibrate_on_examples(scorer, collator, held_out, data_args, folders)
    return RerankerFinetuneResult(
        output_dir=str(training_args.output_dir),
        global_step=int(result.global_step),
        train_loss=float(result.training_loss),
        loss_history=list(loss_curve.history),
        merged_dir=merged,
        calibration=calibration,
    )


@torch.no_grad()
def score_items(
    scorer: RerankerScorer, collator: RerankerCollator, items: list[dict[str, Any]], batch: int = 32
) -> Any:
    """Scores of one-passage items, in order, in eval mode: ``(N,)`` numpy, or ``(N, layers)`` for layerwise."""
    was_training = scorer.training
    scorer.eval()
    device = next(scorer.parameters()).device
    out = []
    try:
        for start in range(0, len(items), batch):
            pair = {k: v.to(device) for k, v in collator(items[start : start + batch])["pair"].items()}
            out.append(scorer(**pair).float().cpu())
    finally:
        scorer.train(was_training)
    return torch.cat(out).numpy()
