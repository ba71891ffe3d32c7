"""Reranker fine-tuning arguments: dataclasses that are both the Python API and the CLI schema.

Field names and defaults follow FlagEmbedding's ``finetune.reranker`` runners (WAVE2_REFERENCE.md §3.b), so
reference command lines (``--train_group_size``, ``--query_instruction_for_rerank``, ``--sep_token``,
``--start_layer``, ...) work unchanged. ``RerankerTrainingArguments`` extends ``transformers.TrainingArguments``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Optional

from transformers import HfArgumentParser, TrainingArguments

ModelType = Literal["encoder", "decoder", "layerwise"]
MODEL_TYPES = ("encoder", "decoder", "layerwise")
DEFAULT_LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class RerankerModelArguments:
    """Which checkpoint to fine-tune, as which kind of reranker, and how (full or LoRA)."""

    model_name_or_path: str = field(metadata={"help": "Model name, hub id or local folder."})
    model_type: str = field(
        default="encoder",
        metadata={"help": "encoder (cross-encoder), decoder (LLM yes-logit) or layerwise (per-layer heads)."},
    )
    tokenizer_name: Optional[str] = field(default=None, metadata={"help": "Tokenizer folder if not the model's."})
    cache_dir: Optional[str] = field(default=None, metadata={"help": "Hugging Face cache folder."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow custom modelling code."})
    token: Optional[str] = field(default=None, metadata={"help": "Hub token."})
    use_lora: Optional[bool] = field(
        default=None, metadata={"help": "LoRA adapters (peft); default on for decoder/layerwise, off for encoder."}
    )
    lora_rank: int = field(default=64, metadata={"help": "LoRA rank."})
    lora_alpha: float = field(default=16.0, metadata={"help": "LoRA alpha."})
    lora_dropout: float = field(default=0.1, metadata={"help": "LoRA dropout."})
    target_modules: list[str] = field(
        default_factory=lambda: list(DEFAULT_LORA_TARGETS), metadata={"help": "Modules that get LoRA adapters."}
    )
    save_merged_lora_model: bool = field(
        default=True, metadata={"help": "With LoRA, also save the merged model in output_dir/merged_model."}
    )
    start_layer: int = field(default=8, metadata={"help": "layerwise: first layer count with a score head."})
    head_multi: bool = field(default=True, metadata={"help": "layerwise: one head per layer (else one shared)."})

    def __post_init__(self) -> None:
        if self.model_type not in MODEL_TYPES:
            raise ValueError(f"unknown model_type {self.model_type!r}; valid: {', '.join(MODEL_TYPES)}")
        if self.use_lora is None:
            self.use_lora = self.model_type != "encoder"
        if self.use_lora and self.model_type == "encoder":
            raise ValueError("use_lora is for model_type decoder/layerwise; an encoder cross-encoder trains fully")
        if self.start_layer < 1:
            raise ValueError(f"start_layer must be >= 1, got {self.start_layer}")


@dataclass
class RerankerDataArguments:
    """Training data and how (query, passage) pairs are built (WAVE2_REFERENCE.md §3.b)."""

    train_data: list[str] = field(
        default_factory=list, metadata={"help": "jsonl files or folders of .json/.jsonl files."}
    )
    train_group_size: int = field(default=8, metadata={"help": "Passages per query: 1 positive + N-1 negatives."})
    query_max_len: int = field(default=32, metadata={"help": "Query token budget."})
    passage_max_len: int = field(default=128, metadata={"help": "Passage token budget (a pair is <= both summed)."})
    max_len: int = field(default=512, metadata={"help": "Accepted for reference compatibility (unused there too)."})
    pad_to_multiple_of: Optional[int] = field(default=None, metadata={"help": "Pad lengths to a multiple of this."})
    max_example_num_per_dataset: int = field(default=100_000_000, metadata={"help": "Examples kept per file."})
    query_instruction_for_rerank: Optional[str] = field(
        default=None, metadata={"help": "Query instruction (decoder kinds default to 'A: ' with the passage's)."}
    )
    query_instruction_format: str = field(default="{}{}", metadata={"help": "Format of instruction and query."})
    passage_instruction_for_rerank: Optional[str] = field(
        default=None, metadata={"help": "Passage instruction (decoder kinds default to 'B: ')."}
    )
    passage_instruction_format: str = field(default="{}{}", metadata={"help": "Format of instruction and passage."})
    knowledge_distillation: bool = field(
        default=False, metadata={"help": "Distil from pos_scores/neg_scores (teacher scores)."}
    )
    shuffle_ratio: float = field(default=0.0, metadata={"help": "Chance of shuffling chunks of a long positive."})
    sep_token: str = field(default="\n", metadata={"help": "decoder kinds: separator between query, passage, prompt."})
    prompt: Optional[str] = field(
        default=None, metadata={"help": "decoder kinds: the yes/no prompt (a record's 'prompt' overrides it)."}
    )
    calibration_ratio: float = field(
        default=0.0,
        metadata={"help": "Hold out this share of the queries and fit a sigmoid scale/bias on their pairs."},
    )


@dataclass
class RerankerTrainingArguments(TrainingArguments):
    """HF ``TrainingArguments`` plus the reranker loss options."""

    loss_plot: bool = field(default=True, metadata={"help": "Save the loss curve as loss.png in output_dir."})
    overwrite_output_dir: bool = field(  # HF 4.x has it, 5.x dropped it: declared here for both
        default=False, metadata={"help": "Train into a non-empty output_dir of another model or run."}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        self.remove_unused_columns = False  # the collator emits a nested pair batch


def check_reranker_data_args(data: RerankerDataArguments) -> None:
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
    if not 0.0 <= data.shuffle_ratio <= 1.0:
        raise ValueError(f"shuffle_ratio must be in [0, 1], got {data.shuffle_ratio}")
    if not 0.0 <= data.calibration_ratio < 1.0:
        raise ValueError(f"calibration_ratio must be in [0, 1), got {data.calibration_ratio}")


def parse_reranker_args(
    argv: Sequence[str],
) -> tuple[RerankerModelArguments, RerankerDataArguments, RerankerTrainingArguments]:
    """Parse reference-style command-line arguments (``--model_name_or_path ... --train_data ...``).

    Raises:
        ValueError: unknown or missing arguments, or bad values.
    """
    parser = HfArgumentParser((RerankerModelArguments, RerankerDataArguments, RerankerTrainingArguments))

    def error(message: str) -> None:  # argparse would print its whole usage and exit
        raise ValueError(message)

    parser.error = error  # type: ignore[method-assign]
    model_args, data_args, training_args, rest = parser.parse_args_into_dataclasses(
        args=list(argv), return_remaining_strings=True
    )
    if rest:
        raise ValueError(f"unknown arguments: {' '.join(rest)}")
    check_reranker_data_args(data_args)
    return model_args, data_args, training_args
