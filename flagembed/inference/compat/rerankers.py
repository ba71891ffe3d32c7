"""FlagEmbedding-compatible reranker names: FlagReranker, FlagLLMReranker, LayerWise/LightWeight, FlagAutoReranker."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from flagembed.inference.compat.embedders import _dtype
from flagembed.inference.layerwise import LayerwiseReranker
from flagembed.inference.lightweight import LightweightReranker
from flagembed.inference.llm_reranker import LLMReranker
from flagembed.inference.reranker import Reranker
from flagembed.models.registry import lookup_folder_name

# ``dtype`` (flagembed's own spelling) overrides the reference's use_fp16/use_bf16 flags, e.g. dtype="bf16" on CPU
_RERANK_PASSTHROUGH = ("revision", "token", "local_files_only", "max_tokens_per_batch", "show_progress", "dtype")


def _reranker_kwargs(kwargs: dict[str, Any], devices: Any, dtype: str, cache_dir: str | None, remote: bool) -> dict:
    """Common constructor arguments; the reference keeps unknown kwargs, flagembed passes the known ones on."""
    passed = {k: kwargs.pop(k) for k in _RERANK_PASSTHROUGH if k in kwargs}
    return {"device": devices, "dtype": dtype, "cache_dir": cache_dir, "trust_remote_code": remote, **passed}


class FlagReranker(Reranker):
    """``FlagEmbedding.FlagReranker`` (cross-encoder) with the reference's arguments and defaults."""

    def __init__(
        self,
        model_name_or_path: str | os.PathLike[str],
        use_fp16: bool = False,
        query_instruction_for_rerank: str | None = None,
        query_instruction_format: str = "{}{}",
        passage_instruction_for_rerank: str | None = None,
        passage_instruction_format: str = "{}{}",
        trust_remote_code: bool = False,
        cache_dir: str | None = None,
        devices: Any = None,
        batch_size: int = 128,
        query_max_length: int | None = None,
        max_length: int = 512,
        normalize: bool = False,
        **kwargs: Any,
    ) -> None:
        common = _reranker_kwargs(kwargs, devices, _dtype(use_fp16, False, devices), cache_dir, trust_remote_code)
        super().__init__(
            model_name_or_path,
            max_length=max_length,
            query_max_length=query_max_length,
            normalize=normalize,
            query_instruction=query_instruction_for_rerank,
            query_instruction_format=query_instruction_format,
            passage_instruction=passage_instruction_for_rerank,
            passage_instruction_format=passage_instruction_format,
            batch_size=batch_size,
            **common,
        )
        self.kwargs = kwargs

    def compute_score(  # type: ignore[override]
        self,
        sentence_pairs: Any,
        batch_size: int | None = None,
        query_max_length: int | None = None,
        max_length: int | None = None,
        normalize: bool | None = None,
        **kwargs: Any,
    ) -> list[float]:
        """Scores as a list (one element for a single pair); extra reference kwargs are ignored."""
        return super().compute_score(
            sentence_pairs,
            normalize=normalize,
            batch_size=batch_size,
            max_length=max_length,
            query_max_length=query_max_length,
        )


class FlagLLMReranker(LLMReranker):
    """``FlagEmbedding.FlagLLMReranker`` (bge-reranker-v2-gemma): yes-logit of a decoder LLM."""

    def __init__(
        self,
        model_name_or_path: str | os.PathLike[str],
        peft_path: str | None = None,
        use_fp16: bool = False,
        use_bf16: bool = False,
        query_instruction_for_rerank: str = "A: ",
        query_instruction_format: str = "{}{}",
        passage_instruction_for_rerank: str = "B: ",
        passage_instruction_format: str = "{}{}",
        cache_dir: str | None = None,
        trust_remote_code: bool = False,
        devices: Any = None,
        prompt: str | None = None,
        batch_size: int = 128,
        query_max_length: int | None = None,
        max_length: int = 512,
        normalize: bool = False,
        **kwargs: Any,
    ) -> None:
        common = _reranker_kwargs(kwargs, devices, _dtype(use_fp16, use_bf16, devices), cache_dir, trust_remote_code)
        super().__init__(
            model_name_or_path,
            peft_path=peft_path,
            prompt=prompt,
            query_instruction=query_instruction_for_rerank,
            query_instruction_format=query_instruction_format,
            passage_instruction=passage_instruction_for_rerank,
            passage_instruction_format=passage_instruction_format,
            max_length=max_length,
            query_max_length=query_max_length,
            normalize=normalize,
            batch_size=batch_size,
            **common,
        )
        self.kwargs = kwargs

    def compute_score(  # type: ignore[override]
        self,
        sentence_pairs: Any,
        batch_size: int | None = None,
        query_max_length: int | None = None,
        max_length: int | None = None,
        prompt: str | None = None,
        normalize: bool | None = None,
        **kwargs: Any,
    ) -> list[float]:
        """Yes-logit scores as a list; ``use_dataloader``/``num_workers``/``device`` are accepted and ignored."""
        opts = {"batch_size": batch_size, "max_length": max_length, "query_max_length": query_max_length}
        return super().compute_score(sentence_pairs, normalize=normalize, prompt=prompt, **opts)


def _layerwise_init(obj: Any, cls: type, model: Any, use_fp16: bool, use_bf16: bool, **kw: Any) -> None:
    # the reference: "use_bf16 and use_fp16 cannot both be False" -> fp16 (only on accelerators; fp32 on CPU)
    devices = kw.pop("devices")
    dtype = _dtype(use_fp16=not use_bf16, use_bf16=use_bf16, devices=devices)
    common = _reranker_kwargs(kw.pop("kwargs"), devices, dtype, kw.pop("cache_dir"), kw.pop("remote"))
    cls.__init__(obj, model, **kw, **common)


class LayerWiseFlagLLMReranker(LayerwiseReranker):
    """``FlagEmbedding.LayerWiseFlagLLMReranker`` (bge-reranker-v2-minicpm-layerwise; needs trust_remote_code)."""

    def __init__(
        self,
        model_name_or_path: str | os.PathLike[str],
        peft_path: str | None = None,
        use_fp16: bool = False,
        use_bf16: bool = False,
        cache_dir: str | None = None,
        trust_remote_code: bool = False,
        devices: Any = None,
        cutoff_layers: list[int] | None = None,
        prompt: str | None = None,
        batch_size: int = 128,
        query_max_length: int | None = None,
        max_length: int = 512,
        normalize: bool = False,
        **kwargs: Any,
    ) -> None:
        _layerwise_init(
            self, LayerwiseReranker, model_name_or_path, use_fp16, use_bf16, peft_path=peft_path,
            cache_dir=cache_dir, remote=trust_remote_code, devices=devices, cutoff_layers=cutoff_layers,
            prompt=prompt, batch_size=batch_size, query_max_length=query_max_length, max_length=max_length,
            normalize=normalize, kwargs=kwargs,
        )  # fmt: skip
        self.kwargs = kwargs


class LightWeightFlagLLMReranker(LightweightReranker):
    """``FlagEmbedding.LightWeightFlagLLMReranker`` (bge-reranker-v2.5-gemma2-lightweight; needs trust_remote_code)."""

    def __init__(
        self,
        model_name_or_path: str | os.PathLike[str],
        peft_path: str | None = None,
        use_fp16: bool = False,
        use_bf16: bool = False,
        cache_dir: str | None = None,
        trust_remote_code: bool = False,
        devices: Any = None,
        cutoff_layers: list[int] | None = None,
        compress_layers: Sequence[int] = (8,),
        compress_ratio: int = 1,
        prompt: str | None = None,
        batch_size: int = 128,
        query_max_length: int | None = None,
        max_length: int = 512,
        normalize: bool = False,
        **kwargs: Any,
    ) -> None:
        _layerwise_init(
            self, LightweightReranker, model_name_or_path, use_fp16, use_bf16, peft_path=peft_path,
            cache_dir=cache_dir, remote=trust_remote_code, devices=devices, cutoff_layers=cutoff_layers,
            compress_layers=compress_layers, compress_ratio=compress_ratio, prompt=prompt, batch_size=batch_size,
            query_max_length=query_max_length, max_length=max_length, normalize=normalize, kwargs=kwargs,
        )  # fmt: skip
        self.kwargs = kwargs

    def compute_score(self, sentence_pairs: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        """As :meth:`LightweightReranker.compute_score`; also takes the reference's ``compress_layer`` spelling."""
        if "compress_layer" in kwargs:
            kwargs["compress_layers"] = kwargs.pop("compress_layer")
        return super().compute_score(sentence_pairs, **kwargs)


_RERANKER_CLASSES: dict[str, type] = {
    "encoder-only-base": FlagReranker,
    "decoder-only-base": FlagLLMReranker,
    "decoder-only-layerwise": LayerWiseFlagLLMReranker,
    "decoder-only-lightweight": LightWeightFlagLLMReranker,
}
_RERANKER_KIND_TO_CLASS = {
    "reranker": "encoder-only-base",
    "llm_reranker": "decoder-only-base",
    "layerwise_reranker": "decoder-only-layerwise",
    "lightweight_reranker": "decoder-only-lightweight",
}


class FlagAutoReranker:
    """``FlagEmbedding.FlagAutoReranker``: pick the reranker class from the registry by model name."""

    def __init__(self) -> None:
        raise OSError("FlagAutoReranker is designed to be instantiated using FlagAutoReranker.from_finetuned(...)")

    @classmethod
    def from_finetuned(
        cls,
        model_name_or_path: str,
        model_class: str | None = None,
        use_fp16: bool = False,
        trust_remote_code: bool | None = None,
        **kwargs: Any,
    ) -> Any:
        """Build the right reranker; unknown names need ``model_class`` (as in the reference).

        A folder named after a registered reranker picks its class, as in the reference; remote code runs
        only with ``trust_remote_code=True`` (the reference takes it from its model table).

        Raises:
            ValueError: unknown model without ``model_class``, or an unknown ``model_class``.
        """
        spec = lookup_folder_name(model_name_or_path)
        if model_class is None:
            if spec is None or spec.kind not in _RERANKER_KIND_TO_CLASS:
                raise ValueError(
                    f"model {model_name_or_path!r} is not a known reranker; pass model_class, "
                    f"one of {sorted(_RERANKER_CLASSES)}"
                )
            model_class = _RERANKER_KIND_TO_CLASS[spec.kind]
        if model_class not in _RERANKER_CLASSES:
            raise ValueError(f"unknown model_class {model_class!r}; valid: {sorted(_RERANKER_CLASSES)}")
        remote = bool(trust_remote_code)
        return _RERANKER_CLASSES[model_class](model_name_or_path, use_fp16=use_fp16, trust_remote_code=remote, **kwargs)
