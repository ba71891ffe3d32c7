"""What the server serves: a dense or M3-style embedding model plus an optional reranker, behind Protocols.

The server needs little from a model, so it talks to small Protocols: a dense model's ``encode``,
an M3-style ``encode(..., return_dense, return_sparse, return_colbert_vecs)`` returning
``{"dense_vecs", "lexical_weights", "colbert_vecs"}`` (FlagEmbedding's layout), and a reranker's
``compute_score(pairs)``. :func:`load_host` builds the real flagembed classes, imported lazily.
"""

from __future__ import annotations

import copy
import inspect
import logging
import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from flagembed.engine import Tokenized, tokenize
from flagembed.inference.inputs import apply_instruction
from flagembed.serve.batcher import RunFn
from flagembed.serve.limits import ApiError

logger = logging.getLogger(__name__)

HostKind = Literal["dense", "m3"]
M3_HEAD_FILES = ("sparse_linear.pt", "colbert_linear.pt")


class DenseModel(Protocol):
    """A model with ``encode(texts, **kwargs) -> array (N, dim)`` and a Hugging Face ``tokenizer``."""

    tokenizer: Any

    def encode(self, texts: list[str], **kwargs: Any) -> Any: ...


class MultiOutputModel(Protocol):
    """An M3-style model: one ``encode`` returns dense, sparse and ColBERT outputs as FlagEmbedding does."""

    tokenizer: Any

    def encode(
        self,
        texts: list[str],
        *,
        return_dense: bool = True,
        return_sparse: bool = False,
        return_colbert_vecs: bool = False,
        **kwargs: Any,
    ) -> Mapping[str, Any]: ...


class RerankModel(Protocol):
    """A reranker: ``compute_score([(query, passage), ...]) -> scores``."""

    def compute_score(self, sentence_pairs: list[tuple[str, str]], **kwargs: Any) -> Sequence[float]: ...


def _accepts(fn: Any, name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


@dataclass
class ModelHost:
    """The served models, their names and the per-request tasks the batcher runs on them."""

    name: str
    model: Any
    kind: HostKind = "dense"
    reranker: Any | None = None
    reranker_name: str | None = None
    aliases: tuple[str, ...] = ()
    created: int = field(default_factory=lambda: int(time.time()))

    def __post_init__(self) -> None:
        tok = getattr(self.model, "tokenizer", None)
        if tok is None:
            raise TypeError(f"model {self.name!r} has no .tokenizer; the server needs it to count tokens")
        # A private copy for counting and decoding on request threads: fast tokenizers are not safe to
        # re-configure (truncation) from two threads, and the worker thread tokenizes with the original.
        self._tokenizer = copy.deepcopy(tok)
        self._tok_lock = threading.Lock()
        enc = self.model.encode
        self._dims_kw = self.kind == "dense" and _accepts(enc, "truncate_dim")
        self._progress_kw = _accepts(enc, "show_progress")
        rtok = getattr(self.reranker, "tokenizer", None) if self.reranker is not None else None
        self._rerank_tokenizer = copy.deepcopy(rtok) if rtok is not None else None

    # ------------------------------------------------------------------ names and facts
    def model_names(self) -> list[str]:
        """Names a request's ``model`` may use for the embedding model."""
        return [self.name, *self.aliases]

    def resolve(self, requested: str | None, reranker: bool = False) -> str:
        """The served name for a request's ``model`` field (``None``: the default)."""
        if reranker:
            if self.reranker is None:
                raise ApiError(404, "this server has no reranker (start it with --reranker)", code="model_not_found")
            if requested is None or requested == self.reranker_name:
                return str(self.reranker_name)
            valid = [self.reranker_name]
        else:
            if requested is None or requested in self.model_names():
                return self.name
            valid = self.model_names()
        raise ApiError(404, f"unknown model {requested!r}; served: {valid}", param="model", code="model_not_found")

    @property
    def dim(self) -> int | None:
        """Dense output dimension, when the model says."""
        dim = getattr(self.model, "dim", None)
        return int(dim) if isinstance(dim, (int, np.integer)) else None

    @property
    def multivector_dim(self) -> int | None:
        """ColBERT vector size, when the model says (``colbert_dim``); lets the server bound output up front."""
        dim = getattr(self.model, "colbert_dim", None) if self.kind == "m3" else None
        return int(dim) if isinstance(dim, (int, np.integer)) and dim > 0 else None

    @property
    def supports_dimensions(self) -> bool:
        return self._dims_kw

    def max_length(self, input_type: str | None) -> int:
        """The model's token limit for this input type."""
        attr = "query_max_length" if input_type == "query" else "passage_max_length"
        for name in (attr, "max_length"):
            value = getattr(self.model, name, None)
            if isinstance(value, int) and value > 0:
                return value
        limit = getattr(self.model.tokenizer, "model_max_length", None)
        return limit if isinstance(limit, int) and 0 < limit < 1_000_000 else 512

    def format_inputs(self, texts: list[str], input_type: str | None) -> list[str]:
        """Apply the model's query or passage instruction (none for ``input_type=None``)."""
        settings = getattr(self.model, "settings", None)
        if settings is None or input_type is None:
            return texts
        if input_type == "query":
            return apply_instruction(texts, settings.query_instruction, settings.query_instruction_format)
        return apply_instruction(texts, settings.passage_instruction, settings.passage_instruction_format)

    def count_tokens(self, texts: list[str], max_length: int) -> Tokenized:
        """Token ids after truncation to ``max_length`` and which texts were cut (thread-safe)."""
        with self._tok_lock:
            return tokenize(self._tokenizer, texts, max_length)

    def token_lengths(self, texts: list[str], max_length: int) -> list[int]:
        """Tokens per text after truncation to ``max_length`` (one tokenizer call; thread-safe)."""
        with self._tok_lock:
            ids = self._tokenizer(texts, truncation=True, max_length=max_length, return_attention_mask=False)
        return [len(x) for x in ids["input_ids"]]

    def count_rerank_tokens(self, query: str, documents: list[str]) -> int:
        """Tokens a rerank request reads: the query once per document plus every document."""
        tok = self._rerank_tokenizer
        if tok is None:
            return 0
        with self._tok_lock:
            ids = tok([query, *documents], add_special_tokens=False)["input_ids"]
        return len(ids[0]) * len(documents) + sum(len(x) for x in ids[1:])

    def decode_tokens(self, token_ids: list[int]) -> list[str]:
        """Each token id as text, as FlagEmbedding's ``convert_id_to_token`` (``decode([id])``)."""
        with self._tok_lock:
            return [self._tokenizer.decode([i]) for i in token_ids]

    def info(self) -> dict[str, Any]:
        """Model facts for ``GET /info``."""
        settings = getattr(self.model, "settings", None)
        out: dict[str, Any] = {
            "name": self.name,
            "aliases": list(self.aliases),
            "kind": self.kind,
            "class": type(self.model).__name__,
            "dim": self.dim,
            "max_length": self.max_length(None),
            "query_max_length": self.max_length("query"),
            "dimensions_supported": self.supports_dimensions,
            "outputs": ["dense", "sparse", "multivector"] if self.kind == "m3" else ["dense"],
        }
        if settings is not None:
            for key in ("pooling", "normalize", "query_instruction", "passage_instruction", "truncate_dim"):
                out[key] = getattr(settings, key, None)
        out["reranker"] = (
            {"name": self.reranker_name, "class": type(self.reranker).__name__} if self.reranker is not None else None
        )
        return out

    # ------------------------------------------------------------------ batcher tasks
    def _kwargs(self, max_length: int) -> dict[str, Any]:
        kw: dict[str, Any] = {"max_length": max_length}
        if self._progress_kw:
            kw["show_progress"] = False
        return kw

    def dense_task(self, max_length: int, dimensions: int | None) -> RunFn:
        """A batcher task: texts → float32 vectors (N, dim)."""
        kw = self._kwargs(max_length)
        if self.kind == "m3":

            def run_m3(texts: list[str]) -> Any:
                out = self.model.encode(texts, return_dense=True, return_sparse=False, return_colbert_vecs=False, **kw)
                return np.asarray(out["dense_vecs"], dtype=np.float32).reshape(len(texts), -1)

            return run_m3
        if dimensions is not None:
            kw["truncate_dim"] = dimensions

        def run_dense(texts: list[str]) -> Any:
            return np.asarray(self.model.encode(texts, **kw), dtype=np.float32).reshape(len(texts), -1)

        return run_dense

    def sparse_task(self, max_length: int) -> RunFn:
        """A batcher task: texts → ``(token_ids, weights)`` per text, ids ascending."""
        kw = self._kwargs(max_length)

        def run(texts: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
            out = self.model.encode(texts, return_dense=False, return_sparse=True, return_colbert_vecs=False, **kw)
            return [_sparse_pairs(w) for w in _as_list(out["lexical_weights"], len(texts))]

        return run

    def multivector_task(self, max_length: int) -> RunFn:
        """A batcher task: texts → float32 arrays (tokens, dim)."""
        kw = self._kwargs(max_length)

        def run(texts: list[str]) -> list[np.ndarray]:
            out = self.model.encode(texts, return_dense=False, return_sparse=False, return_colbert_vecs=True, **kw)
            vecs = _as_list(out["colbert_vecs"], len(texts))
            return [np.asarray(v, dtype=np.float32).reshape(len(np.asarray(v)), -1) for v in vecs]

        return run

    def rerank_task(self) -> RunFn:
        """A batcher task: ``(query, document)`` pairs → float scores."""
        kw = {"show_progress": False} if _accepts(self.reranker.compute_score, "show_progress") else {}

        def run(pairs: list[tuple[str, str]]) -> list[float]:
            scores = self.reranker.compute_score([tuple(p) for p in pairs], **kw)  # type: ignore[union-attr]
            return np.asarray(scores, dtype=np.float64).reshape(-1).tolist()

        return run


def _as_list(value: Any, n: int) -> list[Any]:
    """FlagEmbedding returns a bare item for a single input; always work with a list."""
    if n == 1 and (isinstance(value, Mapping) or (isinstance(value, np.ndarray) and value.ndim == 2)):
        return [value]
    return list(value)


def _sparse_pairs(weights: Mapping[Any, Any]) -> tuple[np.ndarray, np.ndarray]:
    ids = np.fromiter((int(k) for k in weights), dtype=np.int64, count=len(weights))
    vals = np.fromiter((float(v) for v in weights.values()), dtype=np.float64, count=len(weights))
    order = np.argsort(ids, kind="stable")
    return ids[order], vals[order]


# ---------------------------------------------------------------------- loading the real classes
def detect_kind(model: str | os.PathLike[str], path: Path | None) -> HostKind:
    """``m3`` for a registry M3 row or a folder holding M3 head files, else ``dense``."""
    from flagembed.models import lookup

    spec = lookup(model)
    if spec is not None and spec.kind == "m3":
        return "m3"
    if path is not None and any((path / f).is_file() for f in M3_HEAD_FILES):
        return "m3"
    return "dense"


def load_host(
    model: str,
    *,
    reranker: str | None = None,
    kind: Literal["auto", "dense", "m3"] = "auto",
    served_name: str | None = None,
    reranker_name: str | None = None,
    device: str | None = None,
    dtype: str = "auto",
    batch_size: int = 256,
    max_tokens_per_batch: int | None = None,
    max_length: int | None = None,
    trust_remote_code: bool = False,
    task: str | None = None,
) -> ModelHost:
    """Load the embedding model (dense ``Embedder`` or ``M3Embedder``) and an optional reranker.

    Raises:
        ValueError: ``kind`` is not one of auto, dense, m3.
    """
    from flagembed.models import resolve_model_path

    if kind not in ("auto", "dense", "m3"):
        raise ValueError(f"unknown kind {kind!r}; valid: auto, dense, m3")
    common = {"device": device, "dtype": dtype, "batch_size": batch_size, "max_tokens_per_batch": max_tokens_per_batch}
    common["trust_remote_code"] = trust_remote_code  # the user's consent; never taken from the registry
    if max_length is not None:
        common["max_length"] = max_length
    if task is not None:  # LLM-Embedder task instructions
        common["task"] = task
    resolved = kind if kind != "auto" else detect_kind(model, _try_resolve(model, resolve_model_path))
    from flagembed.models.vision.weights import is_visual_folder

    if resolved == "dense" and is_visual_folder(model):  # Visualized-BGE: text and image inputs
        from flagembed.inference import VisualEmbedder

        obj = VisualEmbedder(model, **common)
    elif resolved == "m3":
        from flagembed.inference import M3Embedder

        obj = M3Embedder(model, **common)
    else:
        from flagembed.inference import Embedder

        obj = Embedder(model, **common)
    rr_kwargs = {"device": device, "dtype": dtype, "batch_size": batch_size, "trust_remote_code": trust_remote_code}
    rr = load_reranker(reranker, **rr_kwargs) if reranker else None
    name = served_name or _short_name(model)
    # Names only: a local folder's path is neither accepted as a model name nor shown (404s, /info).
    candidates = [_short_name(model)] if _is_path(model) else [str(model), _short_name(model)]
    aliases = tuple(a for a in dict.fromkeys(candidates) if a != name)
    return ModelHost(
        name=name,
        model=obj,
        kind=resolved,
        reranker=rr,
        reranker_name=(reranker_name or _short_name(reranker)) if reranker is not None else None,
        aliases=aliases,
    )


RERANKER_CLASSES = {
    "reranker": ("flagembed.inference.reranker", "Reranker"),
    "llm_reranker": ("flagembed.inference.llm_reranker", "LLMReranker"),
    "layerwise_reranker": ("flagembed.inference.layerwise", "LayerwiseReranker"),
    "lightweight_reranker": ("flagembed.inference.lightweight", "LightweightReranker"),
}


def load_reranker(name: str, **kwargs: Any) -> Any:
    """The reranker class the registry names for ``name`` (a cross-encoder ``Reranker`` when unknown)."""
    import importlib

    from flagembed.models import lookup

    spec = lookup(name)
    module, cls = RERANKER_CLASSES.get(spec.kind if spec is not None else "reranker", RERANKER_CLASSES["reranker"])
    return getattr(importlib.import_module(module), cls)(name, **kwargs)


def _is_path(model: str) -> bool:
    """A filesystem path rather than a registry name or hub id (``org/name``)."""
    text = str(model)
    return os.path.isabs(text) or text.startswith((".", "~")) or os.path.exists(text)


def _short_name(model: str) -> str:
    return os.path.basename(str(model).rstrip("/\\")) or str(model)


def _try_resolve(model: str, resolve: Any) -> Path | None:
    try:
        return Path(resolve(model))
    except (OSError, ValueError):
        return None
