"""C-MTEB: the 35-task Chinese benchmark with FlagEmbedding's instruction rules, on local folders or through mteb.

Instruction rule (FlagEmbedding's ``research/C_MTEB/eval_C-MTEB.py``): only the queries of the 8 retrieval and
4 reranking tasks get the query instruction; documents, and every text of the other tasks, get none. Each task
runs on its own :class:`TaskModel` view built fresh from the embedder, so no task's instruction can leak into
the next one (FlagEmbedding's MTEB runner kept the previous task's instruction when a lookup failed).

Local folders (``data_root``, laid out as ``../shared/data``) run through flagembed's own evaluators (STS,
pair classification, retrieval); other tasks run through the mteb adapter when mteb can load their data
(online or from the HF cache), and are reported as unavailable otherwise.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from flagembed.evaluate.cache import model_config
from flagembed.evaluate.cmteb_report import TYPE_ORDER, CMTEBReport, TaskScore
from flagembed.evaluate.loaders import load_pairs, load_retrieval
from flagembed.evaluate.pair_classification import evaluate_pair_classification
from flagembed.evaluate.report import EvalResult, write_result
from flagembed.evaluate.retrieval import evaluate_retrieval
from flagembed.evaluate.sts import evaluate_sts
from flagembed.models.registry import BGE_ZH_INSTRUCTION

logger = logging.getLogger(__name__)

TaskType = Literal["Retrieval", "Reranking", "PairClassification", "Clustering", "STS", "Classification"]
INSTRUCTED_TYPES: tuple[str, ...] = ("Retrieval", "Reranking")
C_MTEB_INSTRUCTION = BGE_ZH_INSTRUCTION  # "为这个句子生成表示以用于检索相关文章："


@dataclass(frozen=True)
class CMTEBTask:
    """One C-MTEB task: its mteb name, type, evaluation split and main score."""

    name: str
    type: TaskType
    split: str
    main_score: str
    in_mteb_cmn_v1: bool = True  # part of mteb's ``MTEB(cmn, v1)`` benchmark (31 tasks)
    subset: str | None = None  # language subset of a multilingual mteb task
    official: bool = True  # False: a local extra that does not count in the C-MTEB averages


def _tasks(kind: TaskType, split: str, score: str, names: str, **kw: Any) -> list[CMTEBTask]:
    return [CMTEBTask(n, kind, split, score, **kw) for n in names.split()]


TASKS: tuple[CMTEBTask, ...] = (
    *_tasks("Retrieval", "dev", "ndcg_at_10", "T2Retrieval MMarcoRetrieval DuRetrieval CovidRetrieval"),
    *_tasks("Retrieval", "dev", "ndcg_at_10", "CmedqaRetrieval EcomRetrieval MedicalRetrieval VideoRetrieval"),
    *_tasks("Reranking", "dev", "map", "T2Reranking MMarcoReranking"),
    *_tasks("Reranking", "test", "map", "CMedQAv1-reranking CMedQAv2-reranking"),
    *_tasks("PairClassification", "validation", "max_accuracy", "Ocnli Cmnli"),
    *_tasks("Clustering", "test", "v_measure", "CLSClusteringS2S CLSClusteringP2P ThuNewsClusteringS2S"),
    *_tasks("Clustering", "test", "v_measure", "ThuNewsClusteringP2P"),
    *_tasks("STS", "test", "cosine_spearman", "ATEC BQ LCQMC PAWSX STSB QBQTC"),
    *_tasks("STS", "validation", "cosine_spearman", "AFQMC"),
    CMTEBTask("STS22", "STS", "test", "cosine_spearman", in_mteb_cmn_v1=False, subset="zh"),
    *_tasks("Classification", "validation", "accuracy", "TNews IFlyTek MultilingualSentiment"),
    *_tasks("Classification", "test", "accuracy", "JDReview OnlineShopping Waimai"),
    CMTEBTask("AmazonReviewsClassification", "Classification", "test", "accuracy", False, subset="zh"),
    CMTEBTask("MassiveIntentClassification", "Classification", "test", "accuracy", False, subset="zh-CN"),
    CMTEBTask("MassiveScenarioClassification", "Classification", "test", "accuracy", False, subset="zh-CN"),
)
MTEB_CMN_V1: tuple[str, ...] = tuple(t.name for t in TASKS if t.in_mteb_cmn_v1)
LOCAL_EXTRAS: tuple[CMTEBTask, ...] = (
    CMTEBTask("CMRC2018Retrieval", "Retrieval", "test", "ndcg_at_10", in_mteb_cmn_v1=False, official=False),
)


@dataclass(frozen=True)
class LocalTask:
    """Where a task's data lives under ``data_root`` (the ``../shared/data`` layout) and how to load it."""

    kind: Literal["sts", "pair", "retrieval"]
    path: str
    split: str  # the qrels split for retrieval folders


LOCAL_LAYOUT: dict[str, LocalTask] = {
    "STSB": LocalTask("sts", "sts-zh/stsb-zh/test.tsv", "test"),
    "LCQMC": LocalTask("sts", "sts-zh/lcqmc/test.tsv", "test"),
    "ATEC": LocalTask("sts", "sts-zh/atec/test.tsv", "test"),
    "PAWSX": LocalTask("sts", "sts-zh/pawsx-zh/test.tsv", "test"),
    "AFQMC": LocalTask("sts", "sts-zh/afqmc/dev.tsv", "validation"),
    "CMRC2018Retrieval": LocalTask("retrieval", "cmrc2018-retrieval", "test"),
}
_KIND_OF_TYPE = {"STS": "sts", "PairClassification": "pair", "Retrieval": "retrieval"}


def get_task(name: str) -> CMTEBTask:
    """The task named ``name`` (C-MTEB or a local extra).

    Raises:
        ValueError: unknown name (lists the valid ones).
    """
    for t in (*TASKS, *LOCAL_EXTRAS):
        if t.name == name:
            return t
    valid = ", ".join(t.name for t in (*TASKS, *LOCAL_EXTRAS))
    raise ValueError(f"unknown C-MTEB task {name!r}; valid: {valid}")


def task_instruction(
    task: CMTEBTask, instruction: str | None, task_instructions: Mapping[str, str] | None = None
) -> str | None:
    """The query instruction ``task`` gets: its override, else ``instruction``, for retrieval/reranking only."""
    if task.type not in INSTRUCTED_TYPES:
        return None
    override = (task_instructions or {}).get(task.name)
    return override if override is not None else instruction


class TaskModel:
    """The embedder as one task sees it: a fixed query instruction (or none). Built fresh for every task.

    ``encode`` embeds texts as given (STS, pair classification, clustering, classification);
    ``encode_queries`` adds this task's instruction; ``encode_corpus`` uses the model's passage side.
    ``settings`` carries the task's instruction, so the mteb adapter applies the same rule.
    """

    def __init__(self, embedder: Any, query_instruction: str | None) -> None:
        self.embedder = embedder
        self.query_instruction = query_instruction
        base = getattr(embedder, "settings", None)
        self.settings = (
            dataclasses.replace(base, query_instruction=query_instruction) if dataclasses.is_dataclass(base) else None
        )
        fmt = getattr(base, "query_instruction_format", None)
        self.query_instruction_format = fmt or "{}{}"

    def __getattr__(self, name: str) -> Any:  # dim, tokenizer, batch_size... of the wrapped embedder
        if name == "embedder":
            raise AttributeError(name)
        return getattr(self.embedder, name)

    def encode(self, texts: Any, *, normalize: bool | None = None, **kwargs: Any) -> Any:
        """Texts as they are (plus an ``instruction`` only if the caller passes one, as the mteb adapter does)."""
        if normalize is not None:
            kwargs["normalize"] = normalize
        return self.embedder.encode(texts, **kwargs)

    def encode_queries(self, queries: Any, **kwargs: Any) -> Any:
        """Queries with this task's instruction (none when the task has none)."""
        kwargs.setdefault("instruction", self.query_instruction)
        kwargs.setdefault("instruction_format", self.query_instruction_format)
        return self.embedder.encode_queries(queries, **kwargs)

    def encode_corpus(self, corpus: Any, **kwargs: Any) -> Any:
        """Documents with the model's passage instruction, if any (C-MTEB: none for BGE)."""
        return self.embedder.encode_corpus(corpus, **kwargs)

    def eval_config(self) -> dict[str, Any]:
        """The wrapped model's configuration with this task's query instruction (part of cache keys)."""
        return {**model_config(self.embedder), "query_instruction": self.query_instruction}


def resolve_instruction(embedder: Any, instruction: str | None) -> str | None:
    """``"model"`` -> the model's own query instruction; ``"cmteb"`` -> the C-MTEB one; ``"none"``/None -> none."""
    if instruction == "model":
        return getattr(getattr(embedder, "settings", None), "query_instruction", None)
    if instruction == "cmteb":
        return C_MTEB_INSTRUCTION
    if instruction in (None, "", "none"):
        return None
    return instruction


def select_tasks(tasks: Sequence[str] | str | None, task_types: Sequence[str] | None = None) -> list[CMTEBTask]:
    """Tasks by name (a list, ``"all"``/None = the 35, ``"cmn-v1"`` = mteb's 31, ``"local"``), filtered by type.

    Raises:
        ValueError: an unknown task or type name.
    """
    if tasks is None or tasks == "all":
        chosen = list(TASKS)
    elif tasks == "cmn-v1":
        chosen = [t for t in TASKS if t.in_mteb_cmn_v1]
    elif tasks == "local":
        chosen = [get_task(n) for n in LOCAL_LAYOUT]
    else:
        names = [tasks] if isinstance(tasks, str) else list(tasks)
        chosen = [get_task(n) for n in names]
    if task_types:
        bad = [t for t in task_types if t not in TYPE_ORDER]
        if bad:
            raise ValueError(f"unknown task type(s) {bad}; valid: {', '.join(TYPE_ORDER)}")
        chosen = [t for t in chosen if t.type in task_types]
    return chosen


def _local_source(task: CMTEBTask, data_root: Path | None, local_dirs: Mapping[str, Any]) -> LocalTask | None:
    if task.name in local_dirs:
        kind = _KIND_OF_TYPE.get(task.type)
        if kind is None:
            raise ValueError(f"{task.name}: local folders are supported for {', '.join(_KIND_OF_TYPE)} tasks only")
        path = Path(local_dirs[task.name])
        split = task.split
        if kind == "retrieval" and not (path / "qrels" / f"{split}.tsv").is_file():
            split = "test"  # a BEIR folder without the task's own split name
        return LocalTask(kind, str(path), split)  # type: ignore[arg-type]
    layout = LOCAL_LAYOUT.get(task.name)
    if layout is None or data_root is None or not (data_root / layout.path).exists():
        return None
    return dataclasses.replace(layout, path=str(data_root / layout.path))


def _run_local(model: TaskModel, task: CMTEBTask, src: LocalTask, cache_dir: Any, name: str) -> EvalResult:
    if src.kind == "retrieval":
        data = load_retrieval(src.path, src.split, name=task.name)
        results = evaluate_retrieval(model, data, k_values=(1, 3, 5, 10, 100), cache_dir=cache_dir, model_name=name)
        return results[0]
    pairs = load_pairs(src.path, name=task.name)
    if src.kind == "sts":
        return evaluate_sts(model, pairs, split=task.split, cache_dir=cache_dir, model_name=name)
    result = evaluate_pair_classification(model, pairs, split=task.split, cache_dir=cache_dir, model_name=name)
    sims = ("cosine", "manhattan", "euclidean", "dot")
    result.metrics["max_accuracy"] = max(result.metrics[f"{s}_accuracy"] for s in sims)
    result.main_score = "max_accuracy"
    return result


def _run_mteb(model: TaskModel, task: CMTEBTask, output_dir: Any) -> float:
    from flagembed.evaluate.mteb_adapter import _import_mteb, run_mteb

    mteb = _import_mteb()
    kwargs: dict[str, Any] = {"eval_splits": [task.split]}
    if task.subset:
        kwargs["hf_subsets"] = [task.subset]
    mteb_task = mteb.get_task(task.name, **kwargs)
    scores = run_mteb(model, tasks=[mteb_task], output_dir=output_dir)
    return float(scores[task.name]["main_score"])


def run_task(
    embedder: Any,
    task: CMTEBTask,
    *,
    instruction: str | None = None,
    data_root: str | os.PathLike[str] | None = None,
    local_dirs: Mapping[str, Any] | None = None,
    use_mteb: bool = True,
    cache_dir: str | os.PathLike[str] | None = None,
    mteb_output: str | os.PathLike[str] | None = None,
    model_name: str | None = None,
) -> TaskScore:
    """Run one task on a fresh :class:`TaskModel` (``instruction`` already resolved for this task)."""
    model = TaskModel(embedder, instruction)
    name = model_name or str(model_config(embedder).get("name"))
    base = dict(task=task.name, type=task.type, split=task.split, main_score=task.main_score)
    base.update(instruction=instruction, official=task.official)
    src = _local_source(task, Path(data_root) if data_root is not None else None, local_dirs or {})
    if src is not None:
        result = _run_local(model, task, src, cache_dir, name)
        return TaskScore(**base, score=result.main, source="local", note=src.path, result=result)  # type: ignore[arg-type]
    if not use_mteb:
        return TaskScore(**base, score=None, source="unavailable", note="no local data (mteb disabled)")  # type: ignore[arg-type]
    try:
        score = _run_mteb(model, task, mteb_output)
    except ImportError as exc:
        return TaskScore(**base, score=None, source="unavailable", note=str(exc))  # type: ignore[arg-type]
    except OSError as exc:  # datasets/hub: offline and not in the HF cache (ConnectionError is an OSError)
        note = f"mteb could not load its data (offline and not in the HF cache?): {str(exc).splitlines()[0][:200]}"
        logger.warning("%s: %s", task.name, note)
        return TaskScore(**base, score=None, source="unavailable", note=note)  # type: ignore[arg-type]
    return TaskScore(**base, score=score, source="mteb")  # type: ignore[arg-type]


def run_cmteb(
    embedder: Any,
    *,
    tasks: Sequence[str] | str | None = None,
    task_types: Sequence[str] | None = None,
    instruction: str | None = "model",
    task_instructions: Mapping[str, str] | None = None,
    data_root: str | os.PathLike[str] | None = None,
    local_dirs: Mapping[str, Any] | None = None,
    use_mteb: bool = True,
    output_dir: str | os.PathLike[str] | None = None,
    plot: bool = True,
    model_name: str | None = None,
) -> CMTEBReport:
    """Evaluate ``embedder`` on C-MTEB tasks; local folders first, then mteb; per-type averages as C-MTEB reports.

    Args:
        embedder: a flagembed ``Embedder`` (or anything with ``encode``/``encode_queries``/``encode_corpus``).
        tasks: names, ``"all"``/None (35 tasks), ``"cmn-v1"`` (mteb's 31) or ``"local"`` (what ``data_root`` holds).
        instruction: the query instruction of retrieval/reranking tasks: ``"model"`` (the model's own, e.g. the
            C-MTEB one for bge-*-zh), ``"cmteb"``, ``None``/``"none"`` or any text. Other task types get none.
        task_instructions: per-task overrides (retrieval/reranking tasks only); a task without one gets
            ``instruction``, never the previous task's.
        data_root: a folder laid out like ``../shared/data`` (``sts-zh/...``, ``cmrc2018-retrieval``).
        local_dirs: task name -> a file/folder for that task (STS/pair TSV, or a BEIR retrieval folder).
        use_mteb: run tasks without local data through mteb (needs its data online or in the HF cache).
        output_dir: where to write ``cmteb_results.{json,md}``, ``cmteb.png``, per-task results and caches.

    Raises:
        ValueError: unknown task names or types.
    """
    chosen = select_tasks(tasks, task_types)
    if tasks == "local":
        root = Path(data_root) if data_root is not None else None
        chosen = [t for t in chosen if _local_source(t, root, local_dirs or {}) is not None]
    default = resolve_instruction(embedder, instruction)
    config = model_config(embedder)
    name = model_name or str(config.get("name"))
    out = Path(output_dir) if output_dir is not None else None
    scores: list[TaskScore] = []
    for task in chosen:
        inst = task_instruction(task, default, task_instructions)  # fresh per task: nothing carries over
        logger.info("C-MTEB %s (%s): query instruction %r", task.name, task.type, inst)
        score = run_task(
            embedder,
            task,
            instruction=inst,
            data_root=data_root,
            local_dirs=local_dirs,
            use_mteb=use_mteb,
            cache_dir=out / "embedding_cache" if out is not None else None,
            mteb_output=out / "mteb" if out is not None else None,
            model_name=name,
        )
        scores.append(score)
        if out is not None and score.result is not None:
            write_result(score.result, out)
    report = CMTEBReport(name, getattr(embedder, "dim", None), scores)
    if out is not None:
        report.save(out, plot=plot)
    return report
