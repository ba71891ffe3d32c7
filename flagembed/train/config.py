"""Fine-tuning arguments: dataclasses that are both the Python API and the CLI schema.

Field names and defaults follow FlagEmbedding's ``finetune.embedder`` runners (REFERENCE.md §3.2), so
reference command lines (``--train_data``, ``--train_group_size``, ``--temperature``, ...) work unchanged.
``EmbedderTrainingArguments`` extends ``transformers.TrainingArguments``: every HF option
(``--learning_rate``, ``--fp16``, ``--deepspeed``, ``--gradient_checkpointing``, ...) is accepted too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Optional

from transformers import HfArgumentParser, TrainingArguments

KD_LOSS_TYPES = ("kl_div", "m3_kd_loss")
POOLING_CHOICES = ("cls", "mean", "last_token")
DEFAULT_LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class ModelArguments:
    """Which checkpoint to fine-tune and how (full or LoRA)."""

    model_name_or_path: str = field(metadata={"help": "Model name, hub id or local folder."})
    tokenizer_name: Optional[str] = field(default=None, metadata={"help": "Tokenizer folder if not the model's."})
    cache_dir: Optional[str] = field(default=None, metadata={"help": "Hugging Face cache folder."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow custom modelling code."})
    token: Optional[str] = field(default=None, metadata={"help": "Hub token."})
    use_lora: Optional[bool] = field(
        default=None,
        metadata={"help": "Train LoRA adapters (peft) instead of all weights (default: yes for decoder-only models)."},
    )
    lora_rank: int = field(default=64, metadata={"help": "LoRA rank."})
    lora_alpha: float = field(default=16.0, metadata={"help": "LoRA alpha."})
    lora_dropout: float = field(default=0.1, metadata={"help": "LoRA dropout."})
    target_modules: list[str] = field(
        default_factory=lambda: list(DEFAULT_LORA_TARGETS), metadata={"help": "Modules that get LoRA adapters."}
    )
    save_merged_lora_model: bool = field(
        default=True, metadata={"help": "With LoRA, also save the merged full model (loadable without peft)."}
    )
    colbert_dim: int = field(default=-1, metadata={"help": "BGE-M3 ColBERT head size (<= 0: the hidden size)."})


@dataclass
class DataArguments:
    """Training data and how examples become query/passage groups (REFERENCE.md §3.1, §3.3)."""

    train_data: list[str] = field(
        default_factory=list, metadata={"help": "jsonl files or folders of .json/.jsonl files."}
    )
    train_group_size: int = field(default=8, metadata={"help": "Passages per query: 1 positive + N-1 negatives."})
    query_max_len: int = field(default=32, metadata={"help": "Max query tokens."})
    passage_max_len: int = field(default=128, metadata={"help": "Max passage tokens."})
    pad_to_multiple_of: Optional[int] = field(default=None, metadata={"help": "Pad lengths to a multiple of this."})
    max_example_num_per_dataset: int = field(default=100_000_000, metadata={"help": "Examples kept per file."})
    query_instruction_for_retrieval: Optional[str] = field(default=None, metadata={"help": "Query instruction."})
    query_instruction_format: str = field(default="{}{}", metadata={"help": "Format of instruction and query."})
    passage_instruction_for_retrieval: Optional[str] = field(default=None, metadata={"help": "Passage instruction."})
    passage_instruction_format: str = field(default="{}{}", metadata={"help": "Format of instruction and passage."})
    knowledge_distillation: bool = field(
        default=False, metadata={"help": "Use pos_scores/neg_scores (teacher scores) for distillation."}
    )
    shuffle_ratio: float = field(default=0.0, metadata={"help": "Chance of shuffling chunks of long passages."})
    same_dataset_within_batch: bool = field(default=False, metadata={"help": "Every batch from one data file."})
    small_threshold: int = field(default=0, metadata={"help": "Merge files smaller than this (same-dataset mode)."})
    drop_threshold: int = field(default=0, metadata={"help": "Drop merged small files below this size."})
    # decoder-only ICL training (bge-en-icl, WAVE2_REFERENCE §3.c); needs same_dataset_within_batch
    retrieval_use_examples: bool = field(
        default=False, metadata={"help": "ICL: give queries in-context examples drawn from their batch."}
    )
    icl_suffix_str: str = field(default="\n<response>", metadata={"help": "ICL: suffix after each query."})
    example_query_max_len: int = field(default=64, metadata={"help": "ICL: max tokens of an example query."})
    example_passage_max_len: int = field(default=96, metadata={"help": "ICL: max tokens of an example passage."})
    task_instructions: bool = field(
        default=False,
        metadata={"help": "LLM-Embedder: prepend the record's task instructions (its 'task' field) to query and keys."},
    )
    icl_query_reserve: int = field(
        default=512, metadata={"help": "ICL: tokens kept for the query; examples get query_max_len minus this."}
    )


@dataclass
class EmbedderTrainingArguments(TrainingArguments):
    """HF ``TrainingArguments`` plus the contrastive-loss options of the reference."""

    negatives_cross_device: bool = field(default=False, metadata={"help": "Share negatives across devices."})
    temperature: float = field(default=0.02, metadata={"help": "Softmax temperature of the scores."})
    sentence_pooling_method: Optional[str] = field(
        default=None, metadata={"help": "cls, mean or last_token (default: the model's own pooling, else cls)."}
    )
    normalize_embeddings: bool = field(default=True, metadata={"help": "L2-normalize embeddings."})
    sub_batch_size: Optional[int] = field(
        default=None,
        metadata={"help": "Encode in sub-batches with a gradient cache: large batches in bounded memory."},
    )
    kd_loss_type: str = field(default="kl_div", metadata={"help": "kl_div or m3_kd_loss."})
    loss_type: str = field(
        default="embedder", metadata={"help": "embedder (BGE's losses) or llm_embedder (LLM-Embedder's method)."}
    )
    contrastive_weight: float = field(default=0.2, metadata={"help": "llm_embedder: weight of the InfoNCE term."})
    distill_weight: float = field(default=1.0, metadata={"help": "llm_embedder: weight of the distillation term."})
    teacher_temperature: float = field(default=1.0, metadata={"help": "llm_embedder: KL teacher temperature."})
    student_temperature: float = field(default=1.0, metadata={"help": "llm_embedder: KL student temperature."})
    stable_distill: bool = field(default=False, metadata={"help": "llm_embedder: stable-distillation sequence loss."})
    use_train_config: bool = field(
        default=False, metadata={"help": "llm_embedder: per-task loss settings by the record's 'task'."}
    )
    use_mrl: bool = field(default=False, metadata={"help": "Matryoshka loss over mrl_dims."})
    mrl_dims: list[int] = field(default_factory=list, metadata={"help": "Matryoshka prefix dimensions."})
    loss_plot: bool = field(default=True, metadata={"help": "Save the loss curve as loss.png in output_dir."})
    overwrite_output_dir: bool = field(  # HF 4.x has it, 5.x dropped it: declared here for both
        default=False,
        metadata={"help": "Train into a non-empty output_dir of another model or run (its checkpoint-* are removed)."},
    )
    # BGE-M3 unified fine-tuning (train/m3.py): dense + sparse + ColBERT, optionally self-distilled
    unified_finetuning: bool = field(default=False, metadata={"help": "Train BGE-M3's dense, sparse and ColBERT."})
    use_self_distill: bool = field(default=False, metadata={"help": "Distil the three outputs from their ensemble."})
    self_distill_start_step: int = field(
        default=-1, metadata={"help": "Self-distillation once more than this many forward calls ran."}
    )
    fix_encoder: bool = field(default=False, metadata={"help": "Train only the sparse and ColBERT heads."})
    sparse_flops_weight: float = field(
        default=0.0, metadata={"help": "FLOPS sparsity regulariser weight on the lexical vectors (0: off)."}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.kd_loss_type not in KD_LOSS_TYPES:
            raise ValueError(f"unknown kd_loss_type {self.kd_loss_type!r}; valid: {', '.join(KD_LOSS_TYPES)}")
        if self.loss_type not in ("embedder", "llm_embedder"):
            raise ValueError(f"unknown loss_type {self.loss_type!r}; valid: embedder, llm_embedder")
        if self.sentence_pooling_method is not None and self.sentence_pooling_method not in POOLING_CHOICES:
            raise ValueError(
                f"unknown sentence_pooling_method {self.sentence_pooling_method!r}; valid: {', '.join(POOLING_CHOICES)}"
            )
        if self.sub_batch_size is not None and self.sub_batch_size < 1:
            raise ValueError(f"sub_batch_size must be >= 1, got {self.sub_batch_size}")
        if self.use_mrl and not self.mrl_dims:
            raise ValueError("use_mrl needs mrl_dims, e.g. --mrl_dims 64 128 256")
        for i, dim in enumerate(self.mrl_dims):
            if dim < 1:
                raise ValueError(f"mrl_dims[{i}] must be >= 1, got {dim}")
        check_m3_args(self)
        # the collator emits nested query/passage batches: never let the Trainer drop "unused" columns
        self.remove_unused_columns = False


def check_m3_args(args: EmbedderTrainingArguments) -> None:
    """Reject option combinations the unified (M3) fine-tuning cannot run.

    Raises:
        ValueError: M3-only options without ``unified_finetuning``, or an unsupported combination.
    """
    if not args.unified_finetuning:
        if args.fix_encoder:
            raise ValueError("fix_encoder trains only the M3 heads: it needs --unified_finetuning")
        return
    if args.use_mrl:
        raise ValueError("use_mrl is not supported with unified_finetuning (as the reference)")
    if args.sub_batch_size is not None:
        raise ValueError("sub_batch_size (gradient cache) is not supported with unified_finetuning")
    if args.sparse_flops_weight < 0:
        raise ValueError(f"sparse_flops_weight must be >= 0, got {args.sparse_flops_weight}")


def check_data_args(data: DataArguments) -> None:
    """Validate data arguments that ``HfArgumentParser`` cannot check.

    Raises:
        ValueError: no training data or an out-of-range size.
    """
    if not data.train_data:
        raise ValueError("train_data is empty: pass at least one jsonl file or folder")
    if data.train_group_size < 1:
        raise ValueError(f"train_group_size must be >= 1, got {data.train_group_size}")
    for name in ("query_max_len", "passage_max_len"):
        if getattr(data, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(data, name)}")
    if data.retrieval_use_examples and not data.same_dataset_within_batch:
        raise ValueError("retrieval_use_examples needs same_dataset_within_batch (examples come from the batch)")
    if not 0.0 <= data.shuffle_ratio <= 1.0:
        raise ValueError(f"shuffle_ratio must be in [0, 1], got {data.shuffle_ratio}")


_BOOL_WORDS = {"true", "false", "yes", "no", "1", "0", "t", "f", "y", "n"}


def _bare_flags_true(argv: Sequence[str], flags: tuple[str, ...]) -> list[str]:
    """``--use_lora`` alone means ``--use_lora True`` (its default is ``None``: decided by the model kind)."""
    args = list(argv)
    out: list[str] = []
    for i, arg in enumerate(args):
        out.append(arg)
        if arg in flags and (i + 1 == len(args) or args[i + 1].lower() not in _BOOL_WORDS):
            out.append("True")
    return out


def parse_finetune_args(
    argv: Sequence[str],
) -> tuple[ModelArguments, DataArguments, EmbedderTrainingArguments]:
    """Parse reference-style command-line arguments (``--model_name_or_path ... --train_data ...``).

    Raises:
        ValueError: unknown or missing arguments, or bad values (argparse's message, without its usage dump).
    """
    parser = HfArgumentParser((ModelArguments, DataArguments, EmbedderTrainingArguments))

    def error(message: str) -> None:  # argparse would print its whole usage (130+ lines) and exit
        raise ValueError(message)

    parser.error = error  # type: ignore[method-assign]
    model_args, data_args, training_args, rest = parser.parse_args_into_dataclasses(
        args=_bare_flags_true(argv, ("--use_lora",)), return_remaining_strings=True
    )
    if rest:
        raise ValueError(f"unknown arguments: {' '.join(rest)}")
    check_data_args(data_args)
    return model_args, data_args, training_args
