"""Training data in the reference jsonl format, group sampling and collation (REFERENCE.md §3.1, §3.3).

One line: ``{"query": str, "pos": [str], "neg": [str], "pos_scores"?: [float], "neg_scores"?: [float],
"prompt"?: str, "type"?: str}``. Sampling is deterministic: example ``i`` in epoch ``e`` draws its
positive and negatives from a generator seeded with ``(seed, e, i)``, so resuming a run or changing
the number of dataloader workers never changes what is trained on.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flagembed._io import read_jsonl
from flagembed.engine import pad_ids, tokenize
from flagembed.models.registry import LLM_EMBEDDER_TASKS
from flagembed.train.config import DataArguments
from flagembed.train.decoder import icl_queries
from flagembed.train.llm_embedder import prepare_group, task_config

_TASK_INSTRUCTIONS = {task: (query, key) for task, query, key in LLM_EMBEDDER_TASKS}

logger = logging.getLogger(__name__)

SYMMETRIC_PASSAGE_TYPES = ("symmetric_sts", "symmetric_clustering")


@dataclass
class TrainFile:
    """The examples of one data file (a dataset for ``same_dataset_within_batch``)."""

    path: str
    examples: list[dict[str, Any]]
    no_in_batch_neg: bool = False
    batch_size: int | None = None  # the file's ``batch_size`` column, if any
    sizes: list[int] = field(default_factory=list)


def _data_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix in (".json", ".jsonl") and p.is_file())
        if not files:
            raise ValueError(f"{path}: folder has no .json/.jsonl files")
        return files
    if not path.is_file():
        raise FileNotFoundError(f"training data not found: {path}")
    return [path]


def _check_strings(value: Any, where: str, name: str, allow_empty: bool) -> list[str]:
    if not isinstance(value, list) or (not value and not allow_empty):
        raise ValueError(f"{where}: {name!r} must be a {'' if allow_empty else 'non-empty '}list of strings")
    for j, text in enumerate(value):
        if not isinstance(text, str):
            raise ValueError(f"{where}: {name}[{j}] must be a string, got {type(text).__name__}")
    return value


def _check_scores(obj: dict[str, Any], key: str, texts: str, where: str) -> None:
    scores = obj.get(key)
    if not isinstance(scores, list) or len(scores) != len(obj[texts]):
        raise ValueError(f"{where}: knowledge_distillation needs {key!r} with one score per {texts!r} text")
    for j, s in enumerate(scores):
        if isinstance(s, bool) or not isinstance(s, (int, float)):
            raise ValueError(f"{where}: {key}[{j}] must be a number, got {s!r}")


def check_example(obj: dict[str, Any], where: str, *, group_size: int, kd: bool) -> dict[str, Any]:
    """Validate one training line; errors name ``where`` (file:line).

    Raises:
        ValueError: a missing or malformed field.
    """
    if not isinstance(obj.get("query"), str):
        raise ValueError(f"{where}: 'query' must be a string")
    _check_strings(obj.get("pos"), where, "pos", allow_empty=False)
    obj.setdefault("neg", [])
    _check_strings(obj["neg"], where, "neg", allow_empty=True)
    if group_size > 1 and not obj["neg"]:
        raise ValueError(f"{where}: 'neg' is empty but train_group_size={group_size} needs negatives")
    for key in ("prompt", "type"):
        if obj.get(key) is not None and not isinstance(obj[key], str):
            raise ValueError(f"{where}: {key!r} must be a string")
    if kd:
        _check_scores(obj, "pos_scores", "pos", where)
        _check_scores(obj, "neg_scores", "neg", where)
    else:
        obj.pop("pos_scores", None)
        obj.pop("neg_scores", None)
    return obj


def load_train_files(paths: list[str], args: DataArguments) -> list[TrainFile]:
    """Read and validate every training file (folders are searched for .json/.jsonl).

    Raises:
        ValueError: a malformed line (the message names file and line) or an empty file.
        FileNotFoundError: a path does not exist.
    """
    out: list[TrainFile] = []
    for raw in paths:
        for path in _data_files(Path(raw)):
            examples = []
            with open(path, encoding="utf-8") as f:
                line_numbers = [n for n, line in enumerate(f, 1) if line.strip()]
            for row, obj in enumerate(read_jsonl(path)):
                if len(examples) >= args.max_example_num_per_dataset:
                    break
                where = f"{path}:{line_numbers[row]}"
                examples.append(
                    check_example(obj, where, group_size=args.train_group_size, kd=args.knowledge_distillation)
                )
            if not examples:
                raise ValueError(f"{path}: no training examples")
            batch = examples[0].get("batch_size")
            out.append(
                TrainFile(
                    path=str(path),
                    examples=examples,
                    no_in_batch_neg=os.path.splitext(path.name)[0].endswith("no_in_batch_neg"),
                    batch_size=int(batch) if batch else None,
                )
            )
            logger.info("loaded %d examples from %s", len(examples), path)
    return out


def merge_small_files(files: list[TrainFile], small_threshold: int, drop_threshold: int) -> list[TrainFile]:
    """Same-dataset mode: merge files below ``small_threshold`` examples; drop them if below ``drop_threshold``."""
    if small_threshold <= 0:
        return files
    small = [f for f in files if len(f.examples) < small_threshold]
    keep = [f for f in files if len(f.examples) >= small_threshold]
    if not small:
        return files
    merged = TrainFile(
        path="+".join(f.path for f in small),
        examples=[ex for f in small for ex in f.examples],
        no_in_batch_neg=all(f.no_in_batch_neg for f in small),
        batch_size=small[0].batch_size,
    )
    if len(merged.examples) < drop_threshold:
        logger.info("dropping %d small files (%d examples < drop_threshold)", len(small), len(merged.examples))
        return keep
    return [*keep, merged]


def shuffle_chunks(text: str, rng: np.random.Generator) -> str:
    """Cut a long text in chunks of ``len//3`` characters and join them in random order (the reference's)."""
    step = len(text) // 3
    parts = [text[i : i + step] for i in range(0, len(text), step)]
    order = rng.permutation(len(parts))
    return " ".join(parts[i] for i in order)


def _format(instruction: str | None, fmt: str, text: str) -> str:
    return fmt.format(instruction, text) if instruction else text


def sample_group(
    example: dict[str, Any], group_size: int, args: DataArguments, rng: np.random.Generator
) -> dict[str, Any]:
    """One query with its positive, ``group_size - 1`` negatives and their teacher scores."""
    pos, neg = example["pos"], example["neg"]
    i = int(rng.integers(len(pos)))
    texts = [pos[i]]
    scores = [example["pos_scores"][i]] if "pos_scores" in example else None
    need = group_size - 1
    if need > 0:
        pool = list(range(len(neg))) * math.ceil(need / len(neg)) if len(neg) < need else list(range(len(neg)))
        picked = [pool[j] for j in rng.choice(len(pool), size=need, replace=False)]
        texts += [neg[j] for j in picked]
        if scores is not None:
            scores += [example["neg_scores"][j] for j in picked]
    if args.shuffle_ratio > 0:
        texts = [shuffle_chunks(t, rng) if len(t) > 100 and rng.random() < args.shuffle_ratio else t for t in texts]
    kind = example.get("type") or "normal"
    task = example.get("task")
    if args.task_instructions and task:
        if task not in _TASK_INSTRUCTIONS:
            raise ValueError(f"unknown task {task!r}; valid: {', '.join(_TASK_INSTRUCTIONS)}")
        q_task, p_task = _TASK_INSTRUCTIONS[task]
        return {"query": q_task + example["query"], "passages": [p_task + t for t in texts], "teacher_scores": scores,
                "task": task}  # fmt: skip
    q_instr = example.get("prompt") or args.query_instruction_for_retrieval
    query = _format(q_instr, args.query_instruction_format, example["query"])
    if kind in SYMMETRIC_PASSAGE_TYPES:
        texts = [_format(q_instr, args.query_instruction_format, t) for t in texts]
    else:
        p_instr = args.passage_instruction_for_retrieval
        texts = [_format(p_instr, args.passage_instruction_format, t) for t in texts]
    return {"query": query, "passages": texts, "teacher_scores": scores, "task": task}


def group_size_for(example: dict[str, Any], default: int) -> int:
    """Group size by example ``type`` (same-dataset mode): ``only_1neg`` → 2, ``symmetric_class`` → ≤ negatives+1."""
    kind = example.get("type") or "normal"
    if kind == "only_1neg":
        return min(2, default)
    if kind == "symmetric_class":
        return min(len(example["neg"]) + 1, default)
    return default


class EmbedderTrainDataset(torch.utils.data.Dataset):
    """Query groups from all files; ``set_epoch`` changes the negatives drawn each epoch.

    With ``same_dataset_within_batch`` each item is a whole local batch from one file: global
    batches of ``batch_size * world_size`` examples are cut from one shuffled file, and item
    ``k`` is slice ``k % world_size`` of global batch ``k // world_size``, so that a sequential
    sampler sharded across processes gives every process a slice of the same global batch.
    """

    def __init__(
        self,
        files: list[TrainFile],
        args: DataArguments,
        *,
        seed: int = 42,
        batch_size: int = 1,
        world_size: int = 1,
    ) -> None:
        self.files = files
        self.args = args
        self.seed = seed
        self.epoch = 0
        self.batch_size = batch_size
        self.world_size = world_size
        self.flat = [(f, j) for f, tf in enumerate(files) for j in range(len(tf.examples))]
        self.batched = args.same_dataset_within_batch
        if self.batched:
            self._plan_batches()

    def set_epoch(self, epoch: int) -> None:
        """Draw the negatives (and, in same-dataset mode, the batches) of ``epoch``."""
        if epoch != self.epoch:
            self.epoch = int(epoch)
            if self.batched:
                self._plan_batches()

    def _file_batch_size(self, tf: TrainFile) -> int:
        size = tf.batch_size or self.batch_size
        if (tf.examples[0].get("type") or "").startswith("symmetric"):
            size = max(1, size // 2)
        return size

    def _plan_batches(self) -> None:
        batches: list[tuple[int, np.ndarray]] = []
        for f, tf in enumerate(self.files):
            size = self._file_batch_size(tf) * self.world_size
            order = np.random.default_rng([self.seed, self.epoch, f]).permutation(len(tf.examples))
            for start in range(0, len(order) - size + 1, size):  # partial batches are dropped
                batches.append((f, order[start : start + size]))
        if not batches:
            raise ValueError("no file has enough examples for one batch of batch_size * world_size")
        rng = np.random.default_rng([self.seed, self.epoch, len(self.files)])
        self.global_batches = [batches[i] for i in rng.permutation(len(batches))]

    def __len__(self) -> int:
        if self.batched:
            return len(self.global_batches) * self.world_size
        return len(self.flat)

    def _item(self, f: int, j: int, key: int, group: int | None = None) -> dict[str, Any]:
        tf = self.files[f]
        example = tf.examples[j]
        rng = np.random.default_rng([self.seed, self.epoch, key])
        size = group if group is not None else self.args.train_group_size
        out = sample_group(example, size, self.args, rng)
        out["no_in_batch_neg"] = tf.no_in_batch_neg
        return out

    def __getitem__(self, index: int) -> Any:
        if not self.batched:
            f, j = self.flat[index]
            return self._item(f, j, index)
        f, rows = self.global_batches[index // self.world_size]
        size = self._file_batch_size(self.files[f])
        part = rows[(index % self.world_size) * size : (index % self.world_size + 1) * size]
        examples = self.files[f].examples
        group = min(group_size_for(examples[j], self.args.train_group_size) for j in rows)
        return [self._item(f, int(j), int(j) * 1_000_003 + f, group) for j in part]


class EmbedderCollator:
    """Tokenize queries and passages (truncating to the max lengths) and pad them into tensors."""

    def __init__(
        self,
        tokenizer: Any,
        query_max_len: int,
        passage_max_len: int,
        pad_to_multiple_of: int | None = None,
        append_eos: bool = False,
        icl: dict[str, Any] | None = None,
        seed: int = 42,
        task_groups: bool = False,
    ):
        self.task_groups = task_groups  # LLM-Embedder: reorder groups per the batch's task recipe
        self.tokenizer = tokenizer
        self.append_eos = append_eos  # decoder tokenizers that cannot add EOS themselves
        self.icl = icl  # keyword arguments of train.decoder.icl_queries, or None
        self.rng = np.random.default_rng(seed)
        self.query_max_len = query_max_len
        self.passage_max_len = passage_max_len
        self.pad_to_multiple_of = pad_to_multiple_of
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad_id = int(pad or 0)
        self.side = "left" if getattr(tokenizer, "padding_side", "right") == "left" else "right"

    def _encode(self, texts: list[str], max_len: int) -> dict[str, torch.Tensor]:
        if self.append_eos:
            eos = int(self.tokenizer.eos_token_id)
            ids = [row + [eos] for row in tokenize(self.tokenizer, texts, max(max_len - 1, 1)).ids]
        else:
            ids = tokenize(self.tokenizer, texts, max_len).ids
        input_ids, mask = pad_ids(ids, self.pad_id, self.side, self.pad_to_multiple_of)  # type: ignore[arg-type]
        return {"input_ids": torch.from_numpy(input_ids), "attention_mask": torch.from_numpy(mask)}

    def __call__(self, features: list[Any]) -> dict[str, Any]:
        """Collate items (or same-dataset item lists) into ``queries``/``passages`` batches.

        Raises:
            ValueError: groups of different sizes in one batch.
        """
        items = [x for f in features for x in (f if isinstance(f, list) else [f])]
        tasks = {x.get("task") for x in items}
        if len(tasks) > 1:
            mixed = sorted(map(str, tasks))
            raise ValueError(f"a batch mixes tasks {mixed}: use same_dataset_within_batch, one task per file")
        task = tasks.pop() if tasks else None
        if self.task_groups:
            items = [prepare_group(x, task_config(task), self.rng) for x in items]
        sizes = {len(x["passages"]) for x in items}
        if len(sizes) != 1:
            raise ValueError(f"all groups in a batch must have the same size, got sizes {sorted(sizes)}")
        passages = [t for x in items for t in x["passages"]]
        teacher = None
        if all(x["teacher_scores"] is not None for x in items):
            teacher = torch.tensor([x["teacher_scores"] for x in items], dtype=torch.float32)
        queries = [x["query"] for x in items]
        if self.icl is not None:
            positives = [x["passages"][0] for x in items]
            queries = icl_queries(
                queries, positives, self.tokenizer, self.rng, query_max_len=self.query_max_len, **self.icl
            )
        return {
            "queries": self._encode(queries, self.query_max_len),
            "passages": self._encode(passages, self.passage_max_len),
            "teacher_scores": teacher,
            "no_in_batch_neg": torch.tensor([bool(x["no_in_batch_neg"]) for x in items]),
            "task": task,
        }


def write_jsonl(path: str | os.PathLike[str], records: list[dict[str, Any]]) -> None:
    """Write records one JSON object per line, atomically."""
    import json

    from flagembed._io import atomic_write

    with atomic_write(path, "w") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")


def read_examples(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Records of one training jsonl file (validated for mining/scoring: ``query`` and ``pos`` present)."""
    out = []
    for i, obj in enumerate(read_jsonl(path)):
        if not isinstance(obj.get("query"), str):
            raise ValueError(f"{path}: record {i} has no 'query' string")
        _check_strings(obj.get("pos"), f"{path}: record {i}", "pos", allow_empty=False)
        out.append(obj)
    return out
