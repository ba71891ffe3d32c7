"""Run flagembed embedders under ``mteb`` (optional extra ``flagembed[mteb]``), with C-MTEB query instructions.

The adapter follows FlagEmbedding's MTEB/C-MTEB runners (REFERENCE.md §4.2): retrieval and reranking queries get
the model's query instruction (the C-MTEB instruction for BGE zh models, or a per-task override); documents get
the passage instruction, if any; other task types are embedded as they are; classification embeddings are not
normalized. It speaks both mteb APIs: 2.x (``encode(DataLoader, task_metadata=..., prompt_type=...)``) and 1.x
(``encode(list[str], task_name=..., prompt_type=...)``, ``encode_queries``, ``encode_corpus``).
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from flagembed.evaluate.cache import model_config

logger = logging.getLogger(__name__)

QUERY_INSTRUCTED_TYPES = ("Retrieval", "Reranking", "InstructionRetrieval", "InstructionReranking")
C_MTEB_BENCHMARK = "C-MTEB"
# Names people use for benchmarks that mteb files under another name (mteb >= 1.2x calls C-MTEB "MTEB(cmn, v1)").
BENCHMARK_ALIASES = {"c-mteb": "MTEB(cmn, v1)", "cmteb": "MTEB(cmn, v1)"}


def _import_mteb() -> Any:
    try:
        import mteb
    except ImportError as exc:
        raise ImportError('the MTEB adapter needs mteb: pip install "flagembed[mteb]"') from exc
    return mteb


def _texts_from(inputs: Any) -> list[str]:
    """Texts from a list of strings (mteb 1.x) or a DataLoader of ``{"text": [...]}`` batches (mteb 2.x)."""
    if isinstance(inputs, str):
        return [inputs]
    if isinstance(inputs, Sequence):
        return [_corpus_text(x) for x in inputs]
    out: list[str] = []
    for i, batch in enumerate(inputs):
        if not isinstance(batch, Mapping) or "text" not in batch:
            raise TypeError(
                f"batch {i} has no 'text' field (got {type(batch).__name__}); only text tasks are supported"
            )
        out.extend(_corpus_text(t) for t in batch["text"])
    return out


def _corpus_text(x: Any) -> str:
    if isinstance(x, Mapping):
        return f"{x.get('title') or ''} {x.get('text') or ''}".strip()
    if not isinstance(x, str):
        raise TypeError(f"expected a string or title/text dict, got {type(x).__name__}")
    return x


class FlagembedMTEBModel:
    """An ``mteb`` encoder wrapping any flagembed embedder (``encode``, ``encode_queries``, ``settings``).

    Args:
        embedder: e.g. ``flagembed.Embedder("BAAI/bge-small-zh-v1.5")``.
        task_instructions: per-task query instructions (task name -> instruction) overriding the model's.
        instruct_all_queries: give every query-side text the instruction, not only retrieval/reranking queries.
    """

    def __init__(
        self,
        embedder: Any,
        *,
        task_instructions: Mapping[str, str] | None = None,
        instruct_all_queries: bool = False,
    ) -> None:
        self.model = embedder
        self.task_instructions = dict(task_instructions or {})
        self.instruct_all_queries = instruct_all_queries
        self.config = model_config(embedder)
        self._normalize_kw = "normalize" in inspect.signature(embedder.encode).parameters

    # ------------------------------------------------------------------ instruction policy
    def instruction_for(self, task_name: str | None, task_type: str | None, prompt_type: Any) -> tuple[str | None, str]:
        """(instruction, format) for one call: queries of retrieval-like tasks, documents' passage instruction."""
        settings = getattr(self.model, "settings", None)
        side = getattr(prompt_type, "value", prompt_type)
        if side == "query" and (self.instruct_all_queries or task_type in QUERY_INSTRUCTED_TYPES):
            inst = self.task_instructions.get(task_name or "") or getattr(settings, "query_instruction", None)
            return inst, getattr(settings, "query_instruction_format", "{}{}")
        if side == "document":
            return getattr(settings, "passage_instruction", None), getattr(
                settings, "passage_instruction_format", "{}{}"
            )
        return None, "{}{}"

    # ------------------------------------------------------------------ encoding
    def encode(self, inputs: Any, *args: Any, **kwargs: Any) -> np.ndarray:
        """Embed the texts of one mteb call (either API), applying the task's instruction policy."""
        meta = kwargs.get("task_metadata")
        task_name = getattr(meta, "name", None) or kwargs.get("task_name")
        task_type = getattr(meta, "type", None)
        if task_type is None and task_name:
            task_type = _task_type(task_name)
        instruction, fmt = self.instruction_for(task_name, task_type, kwargs.get("prompt_type"))
        texts = _texts_from(inputs)
        extra: dict[str, Any] = {"instruction": instruction, "instruction_format": fmt}
        if self._normalize_kw and task_type in ("Classification", "MultilabelClassification"):
            extra["normalize"] = False
        vectors = self.model.encode(texts, **extra)
        if isinstance(vectors, dict):
            vectors = vectors["dense_vecs"]
        if hasattr(vectors, "detach"):
            vectors = vectors.detach().cpu().numpy()
        return np.asarray(vectors, dtype=np.float32).reshape(len(texts), -1)

    def encode_queries(self, queries: Sequence[str], **kwargs: Any) -> np.ndarray:
        """mteb 1.x retrieval hook: queries with the query instruction."""
        return self.encode(list(queries), prompt_type="query", **{"task_name": kwargs.get("task_name")})

    def encode_corpus(self, corpus: Any, **kwargs: Any) -> np.ndarray:
        """mteb 1.x retrieval hook: documents (strings or title/text dicts) with the passage instruction."""
        if isinstance(corpus, Mapping):  # {"title": [...], "text": [...]} column form
            corpus = [{"title": t, "text": x} for t, x in zip(corpus.get("title", []), corpus["text"])]
        return self.encode(list(corpus), prompt_type="document", **{"task_name": kwargs.get("task_name")})

    def similarity(self, a: Any, b: Any) -> Any:
        """Cosine similarity matrix (mteb's default for dense embedders)."""
        from mteb.similarity_functions import cos_sim

        return cos_sim(a, b)

    def similarity_pairwise(self, a: Any, b: Any) -> Any:
        """Row-wise cosine similarity."""
        from mteb.similarity_functions import pairwise_cos_sim

        return pairwise_cos_sim(a, b)

    @property
    def mteb_model_meta(self) -> Any:
        """mteb ``ModelMeta`` naming this model (results are filed under its name and revision)."""
        _import_mteb()
        try:
            from mteb.models.model_meta import ModelMeta  # mteb 2.x
        except ImportError:  # mteb 1.x
            from mteb.model_meta import ModelMeta
        name = str(self.config.get("name") or "flagembed-model")
        if "/" not in name:
            name = f"flagembed/{name}"
        return ModelMeta.create_empty(
            overwrites={"name": name, "revision": self.config.get("revision") or "no_revision_available"}
        )


def _task_type(task_name: str) -> str | None:
    try:
        mteb = _import_mteb()
        return mteb.get_task(task_name).metadata.type
    except (ImportError, KeyError, ValueError):
        return None


def to_mteb(embedder: Any, **kwargs: Any) -> FlagembedMTEBModel:
    """Wrap a flagembed embedder for ``mteb.evaluate`` / ``mteb.MTEB(...).run``."""
    return FlagembedMTEBModel(embedder, **kwargs)


def _key_error_text(exc: KeyError) -> str:
    text = str(exc.args[0]) if exc.args else str(exc)
    return text.removeprefix("KeyError: ")


def select_tasks(
    tasks: Iterable[Any] | None = None,
    benchmark: str | None = None,
    *,
    languages: Sequence[str] | None = None,
) -> list[Any]:
    """mteb task objects for task names/objects or a named benchmark, resolved without loading any data or model.

    ``C-MTEB`` is accepted for mteb's ``MTEB(cmn, v1)``.

    Raises:
        ValueError: neither given, or an unknown task or benchmark name (mteb's "did you mean" included).
        ImportError: mteb is not installed.
    """
    mteb = _import_mteb()
    if not tasks and not benchmark:
        raise ValueError("give tasks (e.g. ['STSBenchmark']) or a benchmark (e.g. 'C-MTEB')")
    try:
        if benchmark:
            try:
                return list(mteb.get_benchmark(benchmark).tasks)
            except KeyError:
                alias = BENCHMARK_ALIASES.get(benchmark.strip().lower())
                if alias is None:
                    raise
                return list(mteb.get_benchmark(alias).tasks)
        names = [t for t in tasks or [] if isinstance(t, str)]
        objects = [t for t in tasks or [] if not isinstance(t, str)]
        return objects + (list(mteb.get_tasks(tasks=names, languages=languages)) if names else [])
    except KeyError as exc:
        kind = "benchmark" if benchmark else "task"
        raise ValueError(f"unknown mteb {kind}: {_key_error_text(exc)}") from None


def run_mteb(
    embedder: Any,
    *,
    tasks: Iterable[Any] | None = None,
    benchmark: str | None = None,
    languages: Sequence[str] | None = None,
    output_dir: str | os.PathLike[str] | None = None,
    task_instructions: Mapping[str, str] | None = None,
) -> dict[str, dict[str, float]]:
    """Run mteb tasks (names or task objects) or a named benchmark (e.g. ``C-MTEB``); return main scores per task.

    Needs network access for mteb's datasets unless they are in the Hugging Face cache or the tasks are local.
    Results are also written by mteb under ``output_dir`` when given. Resolve names first with
    :func:`select_tasks` to fail on a typo before loading a model.

    Raises:
        ValueError: neither tasks nor benchmark given, or an unknown name (see :func:`select_tasks`).
        ConnectionError: a dataset could not be downloaded (offline, or the hub unreachable).
        ImportError: mteb is not installed.
    """
    mteb = _import_mteb()
    selected = select_tasks(tasks, benchmark, languages=languages)
    model = to_mteb(embedder, task_instructions=task_instructions)
    cache = mteb.ResultCache(cache_path=str(output_dir)) if output_dir else None
    try:
        result = mteb.evaluate(model, selected, cache=cache)
    except ConnectionError as exc:
        raise ConnectionError(
            f"mteb could not fetch a dataset ({exc}); its tasks need network access or the datasets in the "
            "Hugging Face cache"
        ) from exc
    out: dict[str, dict[str, float]] = {}
    for task_result in result.task_results:
        out[task_result.task_name] = {"main_score": float(task_result.get_score())}
    return out
