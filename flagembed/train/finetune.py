"""``finetune_embedder``: load a checkpoint, build data and trainer, train, save a loadable model folder."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flagembed.models import (
    HubOptions,
    TextEncoder,
    load_backbone,
    load_tokenizer,
    open_checkpoint,
    resolve_model_path,
    resolve_settings,
)
from flagembed.train.config import DataArguments, EmbedderTrainingArguments, ModelArguments, check_data_args
from flagembed.train.data import EmbedderCollator, EmbedderTrainDataset, load_train_files, merge_small_files
from flagembed.train.decoder import is_decoder_only, prepare_decoder_tokenizer
from flagembed.train.losses import world_size
from flagembed.train.output_dir import check_output_dir, run_key, write_run_marker
from flagembed.train.trainer import EmbedderTrainer, EpochCallback, LossCurveCallback

logger = logging.getLogger(__name__)


@dataclass
class FinetuneResult:
    """Where the model went and how training ended."""

    output_dir: str
    global_step: int
    train_loss: float
    loss_history: list[dict[str, float]]
    merged_dir: str | None = None

    @property
    def final_loss(self) -> float:
        """The last logged training loss; the run's mean loss when no logging step was reached."""
        return self.loss_history[-1]["loss"] if self.loss_history else self.train_loss


def _apply_lora(backbone: Any, args: ModelArguments) -> Any:
    try:
        from peft import LoraConfig, TaskType, get_peft_model
    except ImportError as exc:
        raise ImportError('LoRA needs peft: pip install "flagembed[train]"') from exc
    names = {n.rsplit(".", 1)[-1] for n, _ in backbone.named_modules()}
    targets = [t for t in args.target_modules if t in names]
    if not targets:
        raise ValueError(
            f"none of target_modules {args.target_modules} exist in the model; "
            f"some of its modules: {sorted(names)[:20]}"
        )
    config = LoraConfig(
        task_type=TaskType.FEATURE_EXTRACTION,
        r=args.lora_rank,
        lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout,
        target_modules=targets,
    )
    return get_peft_model(backbone, config)


def build_trainer(
    model_args: ModelArguments, data_args: DataArguments, training_args: EmbedderTrainingArguments
) -> EmbedderTrainer:
    """Everything :func:`finetune_embedder` trains with, without starting training.

    Raises:
        ValueError: bad arguments or malformed training data (file and line named).
    """
    check_data_args(data_args)
    remote = model_args.trust_remote_code  # the user's consent; open_checkpoint fails clearly when a model needs it
    hub = HubOptions(cache_dir=model_args.cache_dir, token=model_args.token, trust_remote_code=remote)
    path = open_checkpoint(
        model_args.model_name_or_path, cache_dir=hub.cache_dir, token=hub.token, trust_remote_code=remote
    ).path
    settings = resolve_settings(
        model_args.model_name_or_path,
        path,
        pooling=training_args.sentence_pooling_method,
        normalize=training_args.normalize_embeddings,
    )
    tok_name = model_args.tokenizer_name
    tok_path = resolve_model_path(tok_name, hub, kind="tokenizer") if tok_name else path
    tokenizer = load_tokenizer(tok_path, trust_remote_code=model_args.trust_remote_code)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    backbone = load_backbone(path, trust_remote_code=model_args.trust_remote_code)
    decoder = is_decoder_only(backbone.config)
    append_eos = False
    if decoder:  # as the reference: EOS-terminated texts, left padding, last-token pooling, LoRA by default
        append_eos = not prepare_decoder_tokenizer(tokenizer)
        if training_args.sentence_pooling_method is None and settings.pooling != "last_token":
            settings = settings.with_overrides(pooling="last_token")
    if model_args.use_lora is None:
        model_args.use_lora = decoder
    if model_args.use_lora:
        backbone = _apply_lora(backbone, model_args)
        checkpointing = getattr(training_args, "activation_checkpointing", None)  # transformers 5 name
        if checkpointing or getattr(training_args, "gradient_checkpointing", False):
            backbone.enable_input_require_grads()  # LoRA + checkpointing needs grads on the inputs
    backbone.train()
    encoder = TextEncoder(backbone, settings.pooling, settings.normalize)
    model, loss_hook = backbone, None
    if training_args.unified_finetuning:  # BGE-M3: backbone + sparse/ColBERT heads, the unified loss
        if model_args.use_lora:
            raise ValueError("use_lora is not supported with unified_finetuning")
        from flagembed.train.m3 import M3Loss, build_m3_model

        model = build_m3_model(encoder, path, tokenizer, model_args.colbert_dim, training_args.fix_encoder)
        loss_hook = M3Loss(training_args)
    files = load_train_files(data_args.train_data, data_args)
    if data_args.same_dataset_within_batch:
        files = merge_small_files(files, data_args.small_threshold, data_args.drop_threshold)
    dataset = EmbedderTrainDataset(
        files,
        data_args,
        seed=training_args.seed,
        batch_size=training_args.per_device_train_batch_size,
        world_size=max(1, training_args.world_size),
    )
    if data_args.same_dataset_within_batch:
        training_args.per_device_train_batch_size = 1  # each item is a whole local batch
        training_args.dataloader_num_workers = 0
    icl = None
    if data_args.retrieval_use_examples:
        icl = {
            "example_query_max_len": data_args.example_query_max_len,
            "example_passage_max_len": data_args.example_passage_max_len,
            "suffix": data_args.icl_suffix_str,
            "query_reserve": data_args.icl_query_reserve,
        }
    collator = EmbedderCollator(
        tokenizer,
        data_args.query_max_len,
        data_args.passage_max_len,
        data_args.pad_to_multiple_of,
        append_eos=append_eos,
        icl=icl,
        seed=training_args.seed,
        task_groups=training_args.loss_type == "llm_embedder" and training_args.use_train_config,
    )
    trained_max = base_max_length(settings.max_length, tokenizer, backbone.config)
    export = None
    if not model_args.use_lora:
        export = _export_settings(settings, encoder, data_args, trained_max)
    loss_curve = LossCurveCallback(plot=training_args.loss_plot)
    trainer = EmbedderTrainer(
        model=model,
        args=training_args,
        train_dataset=dataset,
        data_collator=collator,
        processing_class=tokenizer,
        callbacks=[EpochCallback(dataset), loss_curve],
        encoder=encoder,
        export=export,
        loss_hook=loss_hook,
    )
    trainer.loss_curve = loss_curve  # type: ignore[attr-defined]
    trainer.settings = settings  # type: ignore[attr-defined]
    trainer.max_seq_length = trained_max  # type: ignore[attr-defined]
    return trainer


def base_max_length(length: int, tokenizer: Any, config: Any) -> int:
    """The base model's maximum sequence length, which the fine-tuned model keeps (as sentence-transformers does).

    ``length`` is what the checkpoint declares (its ``sentence_bert_config.json``, the registry, else 512),
    capped by the tokenizer's ``model_max_length`` and the position table. The training lengths
    (``query_max_len``/``passage_max_len``) only bound training batches: saving them as the model's maximum
    would silently truncate every later encoding.
    """
    positions = getattr(config, "max_position_embeddings", None)
    if isinstance(positions, int) and getattr(config, "model_type", "") in ("xlm-roberta", "roberta", "camembert"):
        positions -= 2  # RoBERTa-style position ids start after the padding index
    for cap in (getattr(tokenizer, "model_max_length", None), positions):
        if isinstance(cap, int) and 0 < cap < 1_000_000:
            length = min(length, cap)
    return int(length)


def _export_settings(
    settings: Any, encoder: TextEncoder, data_args: DataArguments, max_seq_length: int
) -> dict[str, Any]:
    return {
        "pooling": settings.pooling,
        "normalize": settings.normalize,
        "dim": encoder.hidden_size,
        "max_seq_length": max_seq_length,
        "query_prompt": data_args.query_instruction_for_retrieval,
        "passage_prompt": data_args.passage_instruction_for_retrieval,
    }


def finetune_embedder(
    model_args: ModelArguments,
    data_args: DataArguments,
    training_args: EmbedderTrainingArguments,
    resume_from_checkpoint: str | bool | None = None,
) -> FinetuneResult:
    """Fine-tune a dense embedder with the reference's recipe and save a model folder.

    The output folder is a standard HF model + tokenizer + sentence-transformers config (with LoRA:
    the adapter, plus the merged model in ``output_dir/merged`` when ``save_merged_lora_model``).
    ``loss_history.json`` and ``loss.png`` record the training loss.

    ``output_dir`` must be new or empty, hold this same run (same model and data), or ``resume_from_checkpoint``
    / ``training_args.overwrite_output_dir`` must be set: this is checked before the model is loaded.

    Raises:
        ValueError: bad arguments, a foreign non-empty ``output_dir``, or malformed training data.
    """
    check_data_args(data_args)
    if resume_from_checkpoint and training_args.unified_finetuning:
        raise ValueError("resume_from_checkpoint is not supported with unified_finetuning yet: start a new run")
    key = run_key(model_args.model_name_or_path, data_args.train_data)
    check_output_dir(
        training_args.output_dir,
        key,
        resume=bool(resume_from_checkpoint),
        overwrite=bool(getattr(training_args, "overwrite_output_dir", False)),
        main_process=training_args.should_save,
    )
    if training_args.negatives_cross_device and world_size() == 1:
        logger.info("one process: negatives_cross_device is the same as in-batch negatives")
    trainer = build_trainer(model_args, data_args, training_args)
    if trainer.args.should_save:
        write_run_marker(training_args.output_dir, key)
    result = trainer.train(resume_from_checkpoint=resume_from_checkpoint or None)
    trainer.save_model()
    merged = None
    if model_args.use_lora and model_args.save_merged_lora_model and trainer.args.should_save:
        merged = str(Path(training_args.output_dir) / "merged")
        model = trainer.accelerator.unwrap_model(trainer.model).merge_and_unload()
        model.save_pretrained(merged, safe_serialization=True)
        trainer.processing_class.save_pretrained(merged)  # type: ignore[union-attr]
        from flagembed.train.export import write_sentence_transformers_config

        settings = _export_settings(trainer.settings, trainer.encoder, data_args, trainer.max_seq_length)  # type: ignore[attr-defined]
        write_sentence_transformers_config(merged, **settings)
    return FinetuneResult(
        output_dir=str(training_args.output_dir),
        global_step=int(result.global_step),
        train_loss=float(result.training_loss),
        loss_history=list(trainer.loss_curve.history),  # type: ignore[attr-defined]
        merged_dir=merged,
    )
