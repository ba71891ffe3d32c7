"""Registry of known checkpoints: one row of data per model, no code branching on names.

Rows follow FlagEmbedding's auto-model table (REFERENCE.md §1.7) plus the model cards' recommended
instructions and maximum lengths. Unknown models fall back to what the checkpoint folder says
(sentence-transformers config) and finally to explicit arguments.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Literal

Kind = Literal[
    "embedder",
    "m3",
    "llm_embedder",
    "icl_embedder",
    "reranker",
    "llm_reranker",
    "layerwise_reranker",
    "lightweight_reranker",
]
Pooling = Literal["cls", "mean", "last_token"]

BGE_EN_INSTRUCTION = "Represent this sentence for searching relevant passages: "
BGE_ZH_INSTRUCTION = "为这个句子生成表示以用于检索相关文章："
LLM_EMBEDDER_QUERY = "Represent this query for retrieving relevant documents: "
LLM_EMBEDDER_PASSAGE = "Represent this document for retrieval: "

# LLM-Embedder's task instructions (research/llm_embedder TASK_CONFIG["llm-embedder"]["instruction"]):
# (task, query instruction, key instruction), each prepended by plain concatenation.
LLM_EMBEDDER_TASKS: tuple[tuple[str, str, str], ...] = (
    ("qa", LLM_EMBEDDER_QUERY, LLM_EMBEDDER_PASSAGE),
    (
        "convsearch",
        "Encode this query and context for searching relevant passages: ",
        "Encode this passage for retrieval: ",
    ),
    (
        "chat",
        "Embed this dialogue to find useful historical dialogues: ",
        "Embed this historical dialogue for retrieval: ",
    ),
    (
        "lrlm",
        "Embed this text chunk for finding useful historical chunks: ",
        "Embed this historical text chunk for retrieval: ",
    ),
    (
        "icl",
        "Convert this example into vector to look for useful examples: ",
        "Convert this example into vector for retrieval: ",
    ),
    (
        "tool",
        "Transform this user request for fetching helpful tool descriptions: ",
        "Transform this tool description for retrieval: ",
    ),
)


@dataclass(frozen=True)
class ModelSpec:
    """What flagembed knows about one published checkpoint."""

    name: str
    kind: Kind
    pooling: Pooling | None = None
    query_instruction: str | None = None
    query_instruction_format: str = "{}{}"
    passage_instruction: str | None = None
    passage_instruction_format: str = "{}{}"
    max_length: int = 512
    normalize: bool = True
    dim: int | None = None
    dtype: Literal["fp32", "fp16", "bf16"] = "fp16"
    # The checkpoint ships its own modelling code (``auto_map``): loading it needs the user's consent
    # (``trust_remote_code=True`` / ``--trust-remote-code``); the registry never gives that consent.
    needs_remote_code: bool = False
    languages: tuple[str, ...] = ("en",)
    aliases: tuple[str, ...] = field(default_factory=tuple)
    # per-task (task, query instruction, passage instruction) rows, chosen with ``Embedder(task=...)``
    task_instructions: tuple[tuple[str, str, str], ...] = ()

    def task_instruction(self, task: str) -> tuple[str, str]:
        """``(query, passage)`` instructions of ``task``.

        Raises:
            ValueError: the model has no such task (lists the valid ones).
        """
        for name, query, passage in self.task_instructions:
            if name == task:
                return query, passage
        valid = ", ".join(t[0] for t in self.task_instructions) or "none"
        raise ValueError(f"model {self.name!r} has no task {task!r}; valid: {valid}")


def _bge(name: str, dim: int, lang: str, v15: bool) -> ModelSpec:
    instruction = BGE_EN_INSTRUCTION if lang == "en" else BGE_ZH_INSTRUCTION
    return ModelSpec(
        name=f"BAAI/{name}",
        kind="embedder",
        pooling="cls",
        query_instruction=instruction,
        max_length=512,
        dim=dim,
        languages=(lang,),
    )


_SIZES = {"small": 384, "base": 768, "large": 1024}

MODELS: tuple[ModelSpec, ...] = (
    *(
        _bge(f"bge-{size}-{lang}{suffix}", dim, lang, bool(suffix))
        for size, dim in _SIZES.items()
        for lang in ("en", "zh")
        for suffix in ("", "-v1.5")
    ),
    ModelSpec(
        name="BAAI/bge-m3",
        kind="m3",
        pooling="cls",
        max_length=8192,
        dim=1024,
        languages=("multilingual",),
    ),
    ModelSpec(
        name="BAAI/llm-embedder",
        kind="embedder",
        pooling="cls",
        query_instruction=LLM_EMBEDDER_QUERY,
        passage_instruction=LLM_EMBEDDER_PASSAGE,
        dim=768,
        task_instructions=LLM_EMBEDDER_TASKS,
    ),
    ModelSpec(
        name="BAAI/bge-en-icl",
        kind="icl_embedder",
        pooling="last_token",
        query_instruction_format="<instruct>{}\n<query>{}",
        dim=4096,
        dtype="fp16",
    ),
    ModelSpec(
        name="BAAI/bge-multilingual-gemma2",
        kind="llm_embedder",
        pooling="last_token",
        query_instruction_format="<instruct>{}\n<query>{}",
        dim=3584,
        dtype="bf16",
        languages=("multilingual",),
    ),
    ModelSpec(
        name="sentence-transformers/all-MiniLM-L6-v2",
        kind="embedder",
        pooling="mean",
        max_length=256,
        dim=384,
        dtype="fp32",
        aliases=("all-MiniLM-L6-v2",),
    ),
    *(
        ModelSpec(
            name=f"intfloat/e5-{size}-v2",
            kind="embedder",
            pooling="mean",
            query_instruction="query: ",
            passage_instruction="passage: ",
            dim=dim,
        )
        for size, dim in _SIZES.items()
    ),
    *(
        ModelSpec(
            name=f"intfloat/multilingual-e5-{size}",
            kind="embedder",
            pooling="mean",
            query_instruction="query: ",
            passage_instruction="passage: ",
            dim=dim,
            languages=("multilingual",),
        )
        for size, dim in _SIZES.items()
    ),
    ModelSpec(
        name="intfloat/e5-mistral-7b-instruct",
        kind="llm_embedder",
        pooling="last_token",
        query_instruction_format="Instruct: {}\nQuery: {}",
        dim=4096,
        max_length=4096,
    ),
    *(ModelSpec(name=f"thenlper/gte-{size}", kind="embedder", pooling="mean", dim=dim) for size, dim in _SIZES.items()),
    *(
        ModelSpec(name=f"thenlper/gte-{size}-zh", kind="embedder", pooling="cls", dim=dim, languages=("zh",))
        for size, dim in _SIZES.items()
    ),
    ModelSpec(
        name="Alibaba-NLP/gte-base-en-v1.5",
        kind="embedder",
        pooling="cls",
        dim=768,
        max_length=8192,
        needs_remote_code=True,
    ),
    ModelSpec(
        name="Alibaba-NLP/gte-large-en-v1.5",
        kind="embedder",
        pooling="cls",
        dim=1024,
        max_length=8192,
        needs_remote_code=True,
    ),
    ModelSpec(
        name="Alibaba-NLP/gte-multilingual-base",
        kind="embedder",
        pooling="cls",
        dim=768,
        max_length=8192,
        needs_remote_code=True,
        languages=("multilingual",),
    ),
    *(
        ModelSpec(
            name=f"Qwen/Qwen3-Embedding-{size}",
            kind="llm_embedder",
            pooling="last_token",
            query_instruction_format="Instruct: {}\nQuery:{}",
            dim=dim,
            max_length=8192,
            dtype="bf16",
            languages=("multilingual",),
        )
        for size, dim in (("0.6B", 1024), ("4B", 2560), ("8B", 4096))
    ),
    # decoder-only embedders of FlagEmbedding's auto table (model_mapping.py), with its query formats
    ModelSpec(
        name="BAAI/bge-reasoner-embed-qwen3-8b-0923",
        kind="llm_embedder",
        pooling="last_token",
        query_instruction_format="Instruct: {}\nQuery: {}",
        dim=4096,
        dtype="bf16",
    ),
    ModelSpec(
        name="BAAI/bge-code-v1",
        kind="llm_embedder",
        pooling="last_token",
        query_instruction_format="<instruct>{}\n<query>{}",
        dim=1536,
        dtype="bf16",
        needs_remote_code=True,
        languages=("multilingual",),
    ),
    *(
        ModelSpec(
            name=f"Alibaba-NLP/{name}",
            kind="llm_embedder",
            pooling="last_token",
            query_instruction_format="Instruct: {}\nQuery: {}",
            dim=dim,
            max_length=8192,
            dtype="bf16",
            needs_remote_code=True,
            languages=("multilingual",),
        )
        for name, dim in (
            ("gte-Qwen2-7B-instruct", 3584),
            ("gte-Qwen2-1.5B-instruct", 1536),
            ("gte-Qwen1.5-7B-instruct", 4096),
        )
    ),
    *(
        ModelSpec(
            name=name,
            kind="llm_embedder",
            pooling="last_token",
            query_instruction_format="Instruct: {}\nQuery: {}",
            dim=4096,
            max_length=4096,
        )
        for name in (
            "Salesforce/SFR-Embedding-2_R",
            "Salesforce/SFR-Embedding-Mistral",
            "Linq-AI-Research/Linq-Embed-Mistral",
        )
    ),
    ModelSpec(
        name="maidalun1020/bce-embedding-base_v1",
        kind="embedder",
        pooling="cls",
        dim=768,
        languages=("en", "zh"),
    ),
    # rerankers
    ModelSpec(name="BAAI/bge-reranker-base", kind="reranker", languages=("en", "zh")),
    ModelSpec(name="BAAI/bge-reranker-large", kind="reranker", languages=("en", "zh")),
    ModelSpec(name="BAAI/bge-reranker-v2-m3", kind="reranker", max_length=8192, languages=("multilingual",)),
    ModelSpec(name="BAAI/bge-reranker-v2-gemma", kind="llm_reranker", dtype="bf16", languages=("multilingual",)),
    ModelSpec(
        name="BAAI/bge-reranker-v2-minicpm-layerwise",
        kind="layerwise_reranker",
        dtype="bf16",
        needs_remote_code=True,
        languages=("multilingual",),
    ),
    ModelSpec(
        name="BAAI/bge-reranker-v2.5-gemma2-lightweight",
        kind="lightweight_reranker",
        dtype="bf16",
        needs_remote_code=True,
        languages=("multilingual",),
    ),
)


def _key(name: str) -> str:
    return name.strip().rstrip("/").lower()


def _build_index() -> dict[str, ModelSpec]:
    index: dict[str, ModelSpec] = {}
    for spec in MODELS:
        for key in (spec.name, *spec.aliases):
            index.setdefault(_key(key), spec)
    return index


_INDEX = _build_index()


def _hub_id_from_cache(path: str) -> str | None:
    """``org/name`` for a Hugging Face cache snapshot folder (``.../models--org--name/snapshots/<rev>``)."""
    parts = os.path.normpath(os.path.abspath(path)).split(os.sep)
    if len(parts) >= 3 and parts[-2] == "snapshots" and parts[-3].startswith("models--"):
        return parts[-3][len("models--") :].replace("--", "/", 1)
    return None


def lookup(name_or_path: str | os.PathLike[str]) -> ModelSpec | None:
    """Find the registry row for a hub id (any case) or a registered alias such as ``all-MiniLM-L6-v2``.

    Only exact ids match: ``someone/bge-m3`` is not ``BAAI/bge-m3``. A name that is an existing local
    folder is what the loader will open, so it matches only when its place identifies it (a Hugging Face
    cache snapshot of a registered repo); any other folder gets its settings from its own config files,
    whatever it is called. Returns ``None`` for unknown models.
    """
    text = os.fspath(name_or_path)
    if os.path.isdir(os.path.expanduser(text)):
        hub_id = _hub_id_from_cache(os.path.expanduser(text))
        return _INDEX.get(_key(hub_id)) if hub_id else None
    return _INDEX.get(_key(text))


def lookup_folder_name(name_or_path: str | os.PathLike[str]) -> ModelSpec | None:
    """FlagEmbedding's auto-class rule: match the last path component (the parent of ``checkpoint-*``).

    Only the FlagEmbedding-compatible ``FlagAutoModel``/``FlagAutoReranker`` use it, to pick a class for a
    fine-tuned folder named after its base model (and, as there, its pooling); it never grants remote code.
    """
    spec = lookup(name_or_path)
    if spec is not None:
        return spec
    text = os.fspath(name_or_path).rstrip("/\\")
    base = os.path.basename(text)
    if base.startswith("checkpoint-"):
        base = os.path.basename(os.path.dirname(text))
    matches = [m for m in MODELS if _key(m.name.split("/")[-1]) == _key(base) or _key(base) in map(_key, m.aliases)]
    return matches[0] if matches else None


def list_models(kind: Kind | None = None) -> list[ModelSpec]:
    """All registered checkpoints, optionally of one kind."""
    return [m for m in MODELS if kind is None or m.kind == kind]


TASKS: tuple[str, ...] = tuple(t[0] for t in LLM_EMBEDDER_TASKS)


def task_instructions(name_or_path: str | os.PathLike[str], task: str) -> tuple[str, str]:
    """``(query, passage)`` instructions of an LLM-Embedder ``task`` for a model.

    A registered model uses its own task table; an unregistered one (a local folder, e.g. a fine-tuned
    LLM-Embedder) uses LLM-Embedder's table.

    Raises:
        ValueError: an unknown task, or a registered model without task instructions.
    """
    spec = lookup(name_or_path)
    if spec is None:
        spec = ModelSpec(name=os.fspath(name_or_path), kind="embedder", task_instructions=LLM_EMBEDDER_TASKS)
    elif not spec.task_instructions:
        raise ValueError(
            f"model {spec.name!r} has no task instructions (task={task!r}); pass query_instruction and "
            "passage_instruction instead, or use BAAI/llm-embedder"
        )
    return spec.task_instruction(task)
