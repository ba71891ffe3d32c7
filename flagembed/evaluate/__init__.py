"""Evaluation: ranking metrics, BEIR/STS loaders, MTEB-style evaluators, reports and an embedding cache."""

from flagembed.evaluate.cache import EmbeddingCache, config_hash, model_config
from flagembed.evaluate.classification import evaluate_classification
from flagembed.evaluate.clustering import evaluate_clustering
from flagembed.evaluate.loaders import PairData, RetrievalData, load_pairs, load_retrieval
from flagembed.evaluate.metrics import DEFAULT_K, RankingScores, evaluate_run
from flagembed.evaluate.pair_classification import evaluate_pair_classification
from flagembed.evaluate.report import (
    EvalResult,
    display,
    load_results,
    markdown_table,
    plot_curves,
    write_markdown,
    write_report,
    write_result,
)
from flagembed.evaluate.reranking import evaluate_reranking
from flagembed.evaluate.retrieval import evaluate_retrieval, rerank_run
from flagembed.evaluate.sts import evaluate_sts

__all__ = [
    "DEFAULT_K",
    "EmbeddingCache",
    "EvalResult",
    "PairData",
    "RankingScores",
    "RetrievalData",
    "config_hash",
    "display",
    "evaluate_classification",
    "evaluate_clustering",
    "evaluate_pair_classification",
    "evaluate_reranking",
    "evaluate_retrieval",
    "evaluate_run",
    "evaluate_sts",
    "load_pairs",
    "load_results",
    "load_retrieval",
    "markdown_table",
    "model_config",
    "plot_curves",
    "rerank_run",
    "write_markdown",
    "write_report",
    "write_result",
]
