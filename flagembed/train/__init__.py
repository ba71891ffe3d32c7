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
]
