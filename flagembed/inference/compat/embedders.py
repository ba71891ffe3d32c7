"""FlagEmbedding-compatible embedder names: FlagModel, BGEM3FlagModel, FlagAutoModel."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from flagembed.engine.devices import resolve_devices
from flagembed.inference.embedder import Embedder
from flagembed.inference.m3 import M3Embedder
from flagembed.models.registry import lookup_folder_name


def _dtype(use_fp16: bool, use_bf16: bool, devices: Any = None) -> str:
    """The reference's dtype flags; like the reference, half precision is silently dropped on CPU
    (``use_fp16=True`` is its default, so warning about it would blame the user for a default)."""
    if (use_fp16 or use_bf16) and all(d.type == "cpu" for d in resolve_devices(devices)):
        return "fp32"
    return "bf16" if use_bf16 else ("fp16" if use_fp16 else "fp32")


# ``dtype`` (flagembed's own spelling) overrides the reference's use_fp16/use_bf16 flags, e.g. dtype="bf16" on CPU
_PASSTHROUGH = (
    "revision",
    "token",
    "local_files_only",
    "max_tokens_per_batch",
    "pad_to_multiple_of",
    "dtype",
    "num_threads",
)


def _reference_embedder_args(
    *,
    normalize_embeddings: bool,
    use_fp16: bool,
    use_bf16: bool,
    query_instruction_for_retrieval: str | None,
    query_instruction_format: str,
    devices: Any,
    pooling_method: str,
    trust_remote_code: bool,
    cache_dir: str | None,
    batch_size: int,
    query_max_length: int,
    passage_max_length: int,
    truncate_dim: int | None,
    extra: dict[str, Any],
) -> dict[str, Any]:
    """The reference's embedder arguments as :class:`Embedder` keywords (pops the ones it uses from ``extra``)."""
    return {
        "pooling": pooling_method,
        "normalize": normalize_embeddings,
        # "" = no instruction: the reference applies only what it is given, never a registry default
        "query_instruction": query_instruction_for_retrieval or "",
        "query_instruction_format": query_instruction_format,
        "passage_instruction": extra.pop("passage_instruction_for_retrieval", None) or "",
        "passage_instruction_format": extra.pop("passage_instruction_format", None),
        "max_length": max(query_max_length, passage_max_length),
        "query_max_length": query_max_length,
        "passage_max_length": passage_max_length,
        "truncate_dim": truncate_dim,
        "batch_size": batch_size,
        "device": devices,
        "dtype": _dtype(use_fp16, use_bf16, devices),
        "cache_dir": cache_dir,
        "trust_remote_code": trust_remote_code,
        **{k: extra.pop(k) for k in _PASSTHROUGH if k in extra},
    }


def _keep_extra_kwargs(obj: Any, kwargs: dict[str, Any]) -> None:
    """The reference keeps unknown keyword arguments as attributes (and in ``self.kwargs``)."""
    obj.kwargs = kwargs
    for key, value in kwargs.items():
        setattr(obj, key, value)


class FlagModel(Embedder):
    """``FlagEmbedding.FlagModel`` (encoder-only BGE/E5/GTE) with the reference's arguments and defaults."""

    def __init__(
        self,
        model_name_or_path: str | os.PathLike[str],
        normalize_embeddings: bool = True,
        use_fp16: bool = True,
        use_bf16: bool = False,
        query_instruction_for_retrieval: str | None = None,
        query_instruction_format: str = "{}{}",
        devices: Any = None,
        pooling_method: str = "cls",
        trust_remote_code: bool = False,
        cache_dir: str | None = None,
        batch_size: int = 256,
        query_max_length: int = 512,
        passage_max_length: int = 512,
        convert_to_numpy: bool = True,
        truncate_dim: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            model_name_or_path,
            **_reference_embedder_args(
                normalize_embeddings=normalize_embeddings,
                use_fp16=use_fp16,
                use_bf16=use_bf16,
                query_instruction_for_retrieval=query_instruction_for_retrieval,
                query_instruction_format=query_instruction_format,
                devices=devices,
                pooling_method=pooling_method,
                trust_remote_code=trust_remote_code,
                cache_dir=cache_dir,
                batch_size=batch_size,
                query_max_length=query_max_length,
                passage_max_length=passage_max_length,
                truncate_dim=truncate_dim,
                extra=kwargs,
            ),
        )
        self.convert_to_numpy = convert_to_numpy
        _keep_extra_kwargs(self, kwargs)

    def _fe_kwargs(self, batch_size: int | None, max_length: int | None, convert_to_numpy: bool | None) -> dict:
        to_numpy = self.convert_to_numpy if convert_to_numpy is None else convert_to_numpy
        out: dict[str, Any] = {"convert_to": "numpy" if to_numpy else "torch"}
        if batch_size is not None:
            out["batch_size"] = batch_size
        if max_length is not None:
            out["max_length"] = max_length
        return out

    def encode_queries(  # type: ignore[override]
        self,
        queries: str | Sequence[str],
        batch_size: int | None = None,
        max_length: int | None = None,
        convert_to_numpy: bool | None = None,
        **kwargs: Any,
    ) -> np.ndarray | torch.Tensor:
        return super().encode_queries(queries, **self._fe_kwargs(batch_size, max_length, convert_to_numpy), **kwargs)

    def encode_corpus(  # type: ignore[override]
        self,
        corpus: Any,
        batch_size: int | None = None,
        max_length: int | None = None,
        convert_to_numpy: bool | None = None,
        **kwargs: Any,
    ) -> np.ndarray | torch.Tensor:
        return super().encode_corpus(corpus, **self._fe_kwargs(batch_size, max_length, convert_to_numpy), **kwargs)

    def encode(  # type: ignore[override]
        self,
        sentences: str | Sequence[str],
        batch_size: int | None = None,
        max_length: int | None = None,
        convert_to_numpy: bool | None = None,
        instruction: str | None = None,
        instruction_format: str | None = None,
        **kwargs: Any,
    ) -> np.ndarray | torch.Tensor:
        merged = {**self._fe_kwargs(batch_size, max_length, convert_to_numpy), **kwargs}
        return super().encode(sentences, instruction=instruction, instruction_format=instruction_format, **merged)


class BGEM3FlagModel(M3Embedder):
    """``FlagEmbedding.BGEM3FlagModel`` with the reference's arguments, defaults and return dicts."""

    def __init__(
        self,
        model_name_or_path: str | os.PathLike[str],
        normalize_embeddings: bool = True,
        use_fp16: bool = True,
        use_bf16: bool = False,
        query_instruction_for_retrieval: str | None = None,
        query_instruction_format: str = "{}{}",
        devices: Any = None,
        pooling_method: str = "cls",
        trust_remote_code: bool = False,
        cache_dir: str | None = None,
        colbert_dim: int = -1,
        batch_size: int = 256,
        query_max_length: int = 512,
        passage_max_length: int = 512,
        return_dense: bool = True,
        return_sparse: bool = False,
        return_colbert_vecs: bool = False,
        truncate_dim: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            model_name_or_path,
            colbert_dim=colbert_dim,
            return_dense=return_dense,
            return_sparse=return_sparse,
            return_colbert_vecs=return_colbert_vecs,
            **_reference_embedder_args(
                normalize_embeddings=normalize_embeddings,
                use_fp16=use_fp16,
                use_bf16=use_bf16,
                query_instruction_for_retrieval=query_instruction_for_retrieval,
                query_instruction_format=query_instruction_format,
                devices=devices,
                pooling_method=pooling_method,
                trust_remote_code=trust_remote_code,
                cache_dir=cache_dir,
                batch_size=batch_size,
                query_max_length=query_max_length,
                passage_max_length=passage_max_length,
                truncate_dim=truncate_dim,
                extra=kwargs,
            ),
        )
        _keep_extra_kwargs(self, kwargs)

    def encode(  # type: ignore[override]
        self,
        sentences: str | Sequence[str],
        batch_size: int | None = None,
        max_length: int | None = None,
        return_dense: bool | None = None,
        return_sparse: bool | None = None,
        return_colbert_vecs: bool | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        return super().encode(  # type: ignore[return-value]
            sentences,
            batch_size=batch_size,
            max_length=max_length,
            return_dense=return_dense,
            return_sparse=return_sparse,
            return_colbert_vecs=return_colbert_vecs,
            **kwargs,
        )

    def encode_queries(  # type: ignore[override]
        self,
        queries: str | Sequence[str],
        batch_size: int | None = None,
        max_length: int | None = None,
        return_dense: bool | None = None,
        return_sparse: bool | None = None,
        return_colbert_vecs: bool | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        return super().encode_queries(  # type: ignore[return-value]
            queries,
            batch_size=batch_size,
            max_length=max_length or self.query_max_length,
            return_dense=return_dense,
            return_sparse=return_sparse,
            return_colbert_vecs=return_colbert_vecs,
            **kwargs,
        )

    def encode_corpus(  # type: ignore[override]
        self,
        corpus: Any,
        batch_size: int | None = None,
        max_length: int | None = None,
        return_dense: bool | None = None,
        return_sparse: bool | None = None,
        return_colbert_vecs: bool | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        return super().encode_corpus(  # type: ignore[return-value]
            corpus,
            batch_size=batch_size,
            max_length=max_length or self.passage_max_length,
            return_dense=return_dense,
            return_sparse=return_sparse,
            return_colbert_vecs=return_colbert_vecs,
            **kwargs,
        )


# model_class values accepted by FlagAutoModel.from_finetuned, mapped to flagembed classes.
_EMBEDDER_CLASSES: dict[str, type[Embedder]] = {"encoder-only-base": FlagModel, "encoder-only-m3": BGEM3FlagModel}
_KIND_TO_CLASS = {
    "embedder": "encoder-only-base",
    "m3": "encoder-only-m3",
    "llm_embedder": "decoder-only-base",
    "icl_embedder": "decoder-only-icl",
}


def register_embedder_class(name: str, cls: type[Embedder]) -> None:
    """Make ``cls`` available to ``FlagAutoModel.from_finetuned(model_class=name)``."""
    _EMBEDDER_CLASSES[name] = cls


class FlagAutoModel:
    """``FlagEmbedding.FlagAutoModel``: pick the class and defaults from the registry by model name."""

    def __init__(self) -> None:
        raise OSError("FlagAutoModel is designed to be instantiated using FlagAutoModel.from_finetuned(...)")

    @classmethod
    def from_finetuned(
        cls,
        model_name_or_path: str,
        model_class: str | None = None,
        normalize_embeddings: bool = True,
        use_fp16: bool = True,
        use_bf16: bool = False,
        query_instruction_for_retrieval: str | None = None,
        devices: Any = None,
        pooling_method: str | None = None,
        trust_remote_code: bool | None = None,
        query_instruction_format: str | None = None,
        truncate_dim: int | None = None,
        **kwargs: Any,
    ) -> Embedder:
        """Build the right embedder; unknown names need ``model_class`` (as in the reference).

        Like the reference, a folder named after a registered model (or its ``checkpoint-*``) picks that
        model's class and pooling. Unlike it, the registry never switches on ``trust_remote_code``: models
        that ship their own code (e.g. ``Alibaba-NLP/gte-base-en-v1.5``) need ``trust_remote_code=True``.
        """
        spec = lookup_folder_name(model_name_or_path)
        by_name = model_class is None  # the reference uses its table's format only when it picked the class
        if model_class is None:
            if spec is None or spec.kind not in _KIND_TO_CLASS:
                known = "registered" if spec else "unknown"
                raise ValueError(
                    f"model {model_name_or_path!r} is {known} but has no auto class here; pass model_class, "
                    f"one of {sorted(_EMBEDDER_CLASSES)}"
                )
            model_class = _KIND_TO_CLASS[spec.kind]
        if model_class not in _EMBEDDER_CLASSES:
            raise ValueError(f"unknown model_class {model_class!r}; valid: {sorted(_EMBEDDER_CLASSES)}")
        return _EMBEDDER_CLASSES[model_class](
            model_name_or_path,
            normalize_embeddings=normalize_embeddings,
            use_fp16=use_fp16,
            use_bf16=use_bf16,
            query_instruction_for_retrieval=query_instruction_for_retrieval,
            query_instruction_format=query_instruction_format
            or (spec.query_instruction_format if by_name and spec else "{}{}"),
            devices=devices,
            pooling_method=pooling_method or (spec.pooling if spec and spec.pooling else _default_pooling(model_class)),
            trust_remote_code=bool(trust_remote_code),
            truncate_dim=truncate_dim,
            **kwargs,
        )


def _default_pooling(model_class: str) -> str:
    return "last_token" if model_class.startswith("decoder-only") else "cls"


# ---------------------------------------------------------------------------------------------- rerankers
