"""Fine-tuning embedders: reference-format data, contrastive/KD losses, HF Trainer, hard negatives, teacher scores."""

from flagembed.train.config import (
    DataArguments,
    EmbedderTrainingArguments,
    ModelArguments,
    parse_finetune_args,
)
from flagembed.train.data import EmbedderCollator, EmbedderTrainDataset, load_train_files
from flagembed.train.export import write_sentence_transformers_config
from flagembed.train.finetune import FinetuneResult, build_trainer, finetune_embedder
from flagembed.train.losses import contrastive_loss, embedder_loss, kl_div_loss, m3_kd_loss
from flagembed.train.mining import MiningStats, mine_hard_negatives
from flagembed.train.reranker_calibration import fit_calibration, fit_sigmoid, write_calibration  # noqa: I001
from flagembed.train.reranker_config import (
    RerankerDataArguments,
    RerankerModelArguments,
    RerankerTrainingArguments,
    parse_reranker_args,
)
from flagembed.train.reranker_losses import group_ce_loss, layerwise_loss, reranker_loss, soft_ce_loss
from flagembed.train.reranker_trainer import RerankerFinetuneResult, finetune_reranker
from flagembed.train.teacher import add_teacher_scores, load_teacher
from flagembed.train.trainer import EmbedderTrainer

__all__ = [
    "DataArguments",
    "EmbedderCollator",
    "EmbedderTrainDataset",
    "EmbedderTrainer",
    "EmbedderTrainingArguments",
    "FinetuneResult",
    "MiningStats",
    "ModelArguments",
    "add_teacher_scores",
    "build_trainer",
    "contrastive_loss",
    "embedder_loss",
    "finetune_embedder",
    "kl_div_loss",
    "load_teacher",
    "load_train_files",
    "m3_kd_loss",
    "mine_hard_negatives",
    "parse_finetune_args",
    "write_sentence_transformers_config",
    # rerankers
    "RerankerDataArguments",
    "RerankerFinetuneResult",
    "RerankerModelArguments",
    "RerankerTrainingArguments",
    "finetune_reranker",
    "fit_calibration",
    "fit_sigmoid",
    "group_ce_loss",
    "layerwise_loss",
    "parse_reranker_args",
    "reranker_loss",
    "soft_ce_loss",
    "write_calibration",
]
