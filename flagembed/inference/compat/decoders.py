"""FlagEmbedding's decoder-only embedders: ``FlagLLMModel``, ``FlagICLModel``, ``FlagPseudoMoEModel``.

All three are :class:`~flagembed.inference.compat.FlagModel` (so :class:`~flagembed.Embedder`) with
last-token pooling and the reference's defaults (REFERENCE.md §1.4-1.6, WAVE2_REFERENCE.md §2.6). Only
the ICL query layout needs its own tokenization; its token ids then run through the usual engine
(:meth:`Embedder.encode_ids`).
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from flagembed.engine import tokenize
from flagembed.inference.compat.embedders import FlagModel, register_embedder_class
from flagembed.inference.inputs import as_text_list
from flagembed.models.pooling import finalize, pool


def _last_token_only(kwargs: dict[str, Any]) -> None:
    method = kwargs.pop("pooling_method", None) or "last_token"
    if method != "last_token":
        raise ValueError(f"pooling_method must be 'last_token' for LLM-based models, got {method!r}")


class FlagLLMModel(FlagModel):
    """``FlagEmbedding.FlagLLMModel``: a decoder-only embedder (e5-mistral, gte-Qwen2, bge-multilingual-gemma2, ...).

    Queries are ``query_instruction_format.format(instruction, query)`` (default ``"Instruct: {}\\nQuery: {}"``),
    passages raw; the last real token's state is the embedding. ``pad_to_multiple_of=8`` is the reference's
    advice for bge-multilingual-gemma2. No EOS is appended: the tokenizer's own special tokens rule.

    Raises:
        ValueError: ``pooling_method`` other than ``last_token``.
    """

    def __init__(
        self,
        model_name_or_path: str | os.PathLike[str],
        normalize_embeddings: bool = True,
        use_fp16: bool = True,
        use_bf16: bool = False,
        query_instruction_for_retrieval: str | None = None,
        query_instruction_format: str = "Instruct: {}\nQuery: {}",
        devices: Any = None,
        trust_remote_code: bool = False,
        cache_dir: str | None = None,
        batch_size: int = 256,
        query_max_length: int = 512,
        passage_max_length: int = 512,
        convert_to_numpy: bool = True,
        truncate_dim: int | None = None,
        **kwargs: Any,
    ) -> None:
        _last_token_only(kwargs)
        pad_to_multiple_of = kwargs.pop("pad_to_multiple_of", None)
        super().__init__(
            model_name_or_path,
            normalize_embeddings=normalize_embeddings,
            use_fp16=use_fp16,
            use_bf16=use_bf16,
            query_instruction_for_retrieval=query_instruction_for_retrieval,
            query_instruction_format=query_instruction_format.replace("\\n", "\n"),
            devices=devices,
            pooling_method="last_token",
            trust_remote_code=trust_remote_code,
            cache_dir=cache_dir,
            batch_size=batch_size,
            query_max_length=query_max_length,
            passage_max_length=passage_max_length,
            convert_to_numpy=convert_to_numpy,
            truncate_dim=truncate_dim,
            pad_to_multiple_of=pad_to_multiple_of,
            **kwargs,
        )
        self.query_instruction_for_retrieval = query_instruction_for_retrieval
        self.query_instruction_format = query_instruction_format.replace("\\n", "\n")


class FlagICLModel(FlagLLMModel):
    """``FlagEmbedding.FlagICLModel`` (bge-en-icl): queries carry in-context examples.

    A query becomes ``prefix + <instruct>{instruction}\\n<query>{query} + suffix``, where ``prefix`` is the
    examples, each ``examples_instruction_format.format(instruct, query, response)``, joined and followed by
    blank lines (``""`` without examples). The instructed query alone is cut to ``max_length - len(<s>) -
    len(suffix + </s>)`` tokens (decoded back to text), and the whole prompt to
    ``((len(prefix) + len(suffix) + max_length + 8) // 8) * 8 + 8`` tokens, as in the reference.
    Passages (``encode_corpus``/``encode``) get no examples, instruction or suffix.
    """

    def __init__(
        self,
        model_name_or_path: str | os.PathLike[str],
        normalize_embeddings: bool = True,
        use_fp16: bool = True,
        use_bf16: bool = False,
        query_instruction_for_retrieval: str | None = None,
        query_instruction_format: str = "<instruct>{}\n<query>{}",
        suffix: str = "\n<response>",
        devices: Any = None,
        examples_for_task: Sequence[Mapping[str, str]] | None = None,
        examples_instruction_format: str = "<instruct>{}\n<query>{}\n<response>{}",
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
            normalize_embeddings=normalize_embeddings,
            use_fp16=use_fp16,
            use_bf16=use_bf16,
            query_instruction_for_retrieval=query_instruction_for_retrieval,
            query_instruction_format=query_instruction_format,
            devices=devices,
            trust_remote_code=trust_remote_code,
            cache_dir=cache_dir,
            batch_size=batch_size,
            query_max_length=query_max_length,
            passage_max_length=passage_max_length,
            convert_to_numpy=convert_to_numpy,
            truncate_dim=truncate_dim,
            **kwargs,
        )
        self.suffix = suffix
        self.examples_for_task = list(examples_for_task) if examples_for_task is not None else None
        self.examples_instruction_format = examples_instruction_format.replace("\\n", "\n")
        self.prefix = ""
        self.set_examples()

    def set_examples(self, examples_for_task: Sequence[Mapping[str, str]] | None = None) -> None:
        """Rebuild the examples prefix from ``examples_for_task`` (else the constructor's examples).

        Each example is a dict with ``query``, ``response`` and optional ``instruct`` (default: the query
        instruction). As in the reference, passing examples here does not replace the stored ones.

        Raises:
            TypeError: an example is not a dict (names its index).
        """
        examples = examples_for_task if examples_for_task is not None else self.examples_for_task
        if examples is None:
            self.prefix = ""
            return
        parts = []
        for i, ex in enumerate(examples):
            if not isinstance(ex, Mapping):
                raise TypeError(f"examples_for_task[{i}] must be a dict with 'query' and 'response', got {ex!r:.80}")
            instruct = ex.get("instruct", self.query_instruction_for_retrieval)
            parts.append(self.examples_instruction_format.format(instruct, ex.get("query", ""), ex.get("response", "")))
        self.prefix = "\n\n".join(parts) + "\n\n"

    def query_token_ids(self, queries: Sequence[str], max_length: int) -> list[list[int]]:
        """The token ids of each query prompt (prefix + instructed, truncated query + suffix).

        Raises:
            ValueError: ``max_length`` leaves no room for the query next to ``<s>`` and the suffix.
        """
        tok = self.tokenizer
        texts = list(queries)
        if self.query_instruction_for_retrieval is not None:
            texts = [self.query_instruction_format.format(self.query_instruction_for_retrieval, q) for q in texts]
        n_prefix = len(tok(self.prefix, add_special_tokens=False)["input_ids"])
        n_suffix = len(tok(self.suffix, add_special_tokens=False)["input_ids"])
        n_bos = len(tok("<s>", add_special_tokens=False)["input_ids"])
        n_end = len(tok(f"{self.suffix}</s>", add_special_tokens=False)["input_ids"])
        room = max_length - n_bos - n_end
        if room < 1:
            raise ValueError(
                f"query max_length {max_length} leaves no room for the query: <s> and the suffix take {n_bos + n_end}"
            )
        body = tokenize(tok, texts, room, add_special_tokens=False).ids
        decoded = tok.batch_decode(body)
        prompt_max = (n_prefix + n_suffix + max_length + 8) // 8 * 8 + 8
        return tokenize(tok, [self.prefix + d + self.suffix for d in decoded], prompt_max).ids

    def encode_queries(  # type: ignore[override]
        self,
        queries: str | Sequence[str],
        batch_size: int | None = None,
        max_length: int | None = None,
        convert_to_numpy: bool | None = None,
        **kwargs: Any,
    ) -> np.ndarray | torch.Tensor:
        """Embed queries in the ICL layout (examples prefix, instruction, suffix)."""
        items, single = as_text_list(queries, "queries")
        ids = self.query_token_ids(items, max_length or self.query_max_length)
        emb = self.encode_ids(ids, batch_size=batch_size, **kwargs)
        to_numpy = self.convert_to_numpy if convert_to_numpy is None else convert_to_numpy
        return self._convert(emb, single, "numpy" if to_numpy else "torch", "float32", None)


class FlagPseudoMoEModel(FlagLLMModel):
    """``FlagEmbedding.FlagPseudoMoEModel``: a decoder embedder whose own code routes by domain.

    The checkpoint ships modelling code, so ``trust_remote_code`` defaults to ``True`` as in the reference
    (it is still the caller's explicit choice: pass ``False`` to refuse). ``domain_for_pseudo_moe`` (or a
    per-call ``domain_for_pseudo_moe=``/``domain=``) is set with the model's ``set_domain`` and passed to its
    forward when that accepts it; non-finite values become finite (NaN 0, ±inf ±1e4) before normalization.
    """

    def __init__(
        self,
        model_name_or_path: str | os.PathLike[str],
        normalize_embeddings: bool = True,
        use_fp16: bool = False,
        use_bf16: bool = True,
        query_instruction_for_retrieval: str | None = None,
        query_instruction_format: str = "Instruct: {}\nQuery: {}",
        devices: Any = None,
        trust_remote_code: bool = True,
        cache_dir: str | None = None,
        batch_size: int = 256,
        query_max_length: int = 512,
        passage_max_length: int = 512,
        convert_to_numpy: bool = True,
        truncate_dim: int | None = None,
        domain_for_pseudo_moe: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            model_name_or_path,
            normalize_embeddings=normalize_embeddings,
            use_fp16=use_fp16,
            use_bf16=use_bf16,
            query_instruction_for_retrieval=query_instruction_for_retrieval,
            query_instruction_format=query_instruction_format,
            devices=devices,
            trust_remote_code=trust_remote_code,
            cache_dir=cache_dir,
            batch_size=batch_size,
            query_max_length=query_max_length,
            passage_max_length=passage_max_length,
            convert_to_numpy=convert_to_numpy,
            truncate_dim=truncate_dim,
            **kwargs,
        )
        self.domain_for_pseudo_moe = domain_for_pseudo_moe
        self._domain: str | None = None
        params = inspect.signature(self.encoder.backbone.forward).parameters.values()
        self._forward_takes_domain = any(p.name == "domain" or p.kind is p.VAR_KEYWORD for p in params)

    def encode(self, sentences: Any, *args: Any, **kwargs: Any) -> np.ndarray | torch.Tensor:  # type: ignore[override]
        """``FlagModel.encode`` with an optional ``domain_for_pseudo_moe=``/``domain=`` for this call."""
        domain = kwargs.pop("domain_for_pseudo_moe", None) or kwargs.pop("domain", None) or self.domain_for_pseudo_moe
        kwargs.pop("domain", None)
        backbone = self.encoder.backbone
        if domain is not None and hasattr(backbone, "set_domain"):
            backbone.set_domain(domain)
        self._domain = domain
        try:
            return super().encode(sentences, *args, **kwargs)
        finally:
            self._domain = None

    def _step(self, normalize: bool | None, truncate_dim: int | None) -> Any:
        norm = self.encoder.normalize if normalize is None else normalize
        dim = truncate_dim if truncate_dim is not None else self.encoder.truncate_dim
        extra = {"domain": self._domain} if self._domain is not None and self._forward_takes_domain else {}

        def step(batch: Any) -> torch.Tensor:
            hidden = self.encoder.hidden_states(batch.input_ids, batch.attention_mask, **extra)
            emb = pool(hidden, batch.attention_mask, "last_token")
            emb = torch.nan_to_num(emb, nan=0.0, posinf=1e4, neginf=-1e4).float()
            return finalize(emb, dim, norm)

        return step


register_embedder_class("decoder-only-base", FlagLLMModel)
register_embedder_class("decoder-only-icl", FlagICLModel)
register_embedder_class("decoder-only-pseudo_moe", FlagPseudoMoEModel)
