"""Reranker: cross-encoder scores for (query, passage) pairs, plus the pair validation all rerankers share."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch

from flagembed.engine import EngineConfig, resolve_dtype, run_batches
from flagembed.engine.devices import DeviceLike, DType, resolve_devices
from flagembed.inference.calibration import load_calibration
from flagembed.inference.inputs import apply_instruction, check_unicode, corpus_text
from flagembed.inference.pair_inputs import PairTokens, cross_encoder_pairs, pair_template
from flagembed.inference.parallel import DevicePool, join_scores, remember_init, scores_chunk
from flagembed.models import load_tokenizer, open_checkpoint

logger = logging.getLogger(__name__)

DEFAULT_MAX_LENGTH = 512


class RerankResult(NamedTuple):
    """One reranked document: its position in the input list, its score and the document itself."""

    index: int
    score: float
    document: Any


def as_pairs(pairs: Any) -> tuple[list[tuple[str, str]], bool]:
    """Validate reranker input: one ``(query, passage)`` pair or a list of them.

    Returns:
        ``(pairs, was_single_pair)``.

    Raises:
        TypeError: the input is not a pair or a list of pairs; names the bad index and value.
    """
    if isinstance(pairs, (tuple, list)) and len(pairs) == 2 and all(isinstance(x, str) for x in pairs):
        check_unicode(pairs[0] + pairs[1], "sentence_pairs")
        return [(pairs[0], pairs[1])], True
    if pairs is None or isinstance(pairs, (str, bytes, Mapping)) or not isinstance(pairs, Sequence):
        raise TypeError(
            f"sentence_pairs must be a (query, passage) pair or a list of pairs, got {type(pairs).__name__}"
        )
    out: list[tuple[str, str]] = []
    for i, pair in enumerate(pairs):
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            size = f"of size {len(pair)}" if isinstance(pair, (tuple, list)) else type(pair).__name__
            raise TypeError(f"sentence_pairs[{i}] must be a (query, passage) pair, got {size}: {pair!r:.80}")
        for j, what in enumerate(("query", "passage")):
            if not isinstance(pair[j], str):
                raise TypeError(
                    f"sentence_pairs[{i}] {what} must be a string, got {type(pair[j]).__name__}: {pair[j]!r:.80}"
                )
            check_unicode(pair[j], f"sentence_pairs[{i}] {what}")
        out.append((pair[0], pair[1]))
    return out, False


def sigmoid(scores: np.ndarray) -> np.ndarray:
    """Logistic function, float64 for stability on large logits."""
    return 1.0 / (1.0 + np.exp(-np.asarray(scores, dtype=np.float64)))


def rank(scores: Sequence[float], documents: Sequence[Any], top_k: int | None = None) -> list[RerankResult]:
    """Documents sorted by descending score (ties keep input order), cut to ``top_k``."""
    if top_k is not None and top_k < 0:
        raise ValueError(f"top_k must be >= 0, got {top_k}")
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    return [RerankResult(i, float(scores[i]), documents[i]) for i in order[:top_k]]


def cap_length(length: int, tokenizer: Any, config: Any) -> int:
    """``length`` limited to what the tokenizer and the model's position table allow."""
    if length < 1:
        raise ValueError(f"max_length must be >= 1, got {length}")
    positions = getattr(config, "max_position_embeddings", None)
    if isinstance(positions, int) and getattr(config, "model_type", "") in ("xlm-roberta", "roberta", "camembert"):
        positions -= 2  # RoBERTa-style position ids start after the padding index
    for cap in (getattr(tokenizer, "model_max_length", None), positions):
        if isinstance(cap, int) and 0 < cap < 1_000_000 and length > cap:
            logger.warning("max_length %d exceeds the model's limit %d; using %d", length, cap, cap)
            length = cap
    return length


def require_head_weights(name: Any, info: Mapping[str, Any], config: Any, head: str) -> None:
    """Refuse a checkpoint whose score head was newly initialized (missing from its weights).

    ``info`` is ``from_pretrained(..., output_loading_info=True)``'s report. A random head gives plausible
    but meaningless scores (an embedder or an M3 folder loaded as a cross-encoder, a cross-encoder as an LLM).

    Raises:
        ValueError: names the missing weights and the kind of reranker the checkpoint may be.
    """
    missing = sorted(str(k) for k in info.get("missing_keys") or ())
    if not missing:
        return
    archs = [str(a) for a in getattr(config, "architectures", None) or []]
    if head == "LM head":
        hint = "use --kind cross-encoder (Reranker) for a cross-encoder" if any(
            a.endswith("ForSequenceClassification") for a in archs
        ) else "it is not a causal-LM reranker checkpoint"
    else:
        decoder = any(a.endswith("ForCausalLM") for a in archs) or bool(getattr(config, "is_decoder", False))
        hint = "for a decoder LM reranker use --kind llm (LLMReranker)" if decoder else (
            "it is not a cross-encoder reranker (an embedder or a BGE-M3 folder?)"
        )
    shown = ", ".join(missing[:4]) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
    raise ValueError(f"{os.fspath(name)!r} has no trained {head} (missing from the checkpoint: {shown}); {hint}")


class Reranker:
    """Cross-encoder reranker (``AutoModelForSequenceClassification``: bge-reranker-base/large/v2-m3, ...).

    Inputs are built exactly like FlagEmbedding's ``FlagReranker`` (REFERENCE.md §1.8): the query is
    cut to ``query_max_length`` (default ``max_length * 3 // 4``), the passage fills the rest, special
    tokens are added once. Pairs run longest-first in token-budget batches through the shared engine.

    Example:
        >>> rr = Reranker("BAAI/bge-reranker-v2-m3")
        >>> rr.compute_score([("what is a panda?", "The giant panda is a bear.")], normalize=True)
        >>> rr.rerank("what is a panda?", ["hi", "The giant panda is a bear."], top_k=1)
    """

    @remember_init
    def __init__(
        self,
        model_name_or_path: str | os.PathLike[str],
        *,
        max_length: int = DEFAULT_MAX_LENGTH,
        query_max_length: int | None = None,
        normalize: bool = False,
        query_instruction: str | None = None,
        query_instruction_format: str = "{}{}",
        passage_instruction: str | None = None,
        passage_instruction_format: str = "{}{}",
        batch_size: int = 128,
        max_tokens_per_batch: int | None = None,
        device: DeviceLike | Sequence[DeviceLike] = None,
        dtype: DType | torch.dtype = "auto",
        revision: str | None = None,
        cache_dir: str | None = None,
        token: str | bool | None = None,
        local_files_only: bool | None = None,
        trust_remote_code: bool | None = None,
        show_progress: bool | None = None,
    ) -> None:
        from transformers import AutoModelForSequenceClassification

        from flagembed._compat import dtype_kwargs, from_pretrained

        ckpt = open_checkpoint(
            model_name_or_path,
            revision=revision,
            cache_dir=cache_dir,
            token=token,
            local_files_only=local_files_only,
            trust_remote_code=trust_remote_code,
        )
        self.path, spec, remote = ckpt.path, ckpt.spec, ckpt.trust_remote_code
        self.devices = resolve_devices(device)  # several devices: one worker process each (see compute_score)
        self.device = self.devices[0]
        self.dtype = resolve_dtype(dtype, self.device, preferred=spec.dtype if spec else "fp16", cpu_bf16=True)
        self.tokenizer = load_tokenizer(self.path, trust_remote_code=remote)
        self.model, info = from_pretrained(
            AutoModelForSequenceClassification,
            str(self.path),
            trust_remote_code=remote,
            output_loading_info=True,
            **dtype_kwargs(self.dtype),
        )
        require_head_weights(model_name_or_path, info, self.model.config, "classification head")
        self.model.to(self.device).eval()
        if int(getattr(self.model.config, "num_labels", 1)) != 1:
            raise ValueError(
                f"{model_name_or_path!r} has {self.model.config.num_labels} labels; a reranker needs one score per pair"
            )
        self.max_length = cap_length(max_length, self.tokenizer, self.model.config)
        self.query_max_length = query_max_length
        self.normalize = normalize
        self.query_instruction = (query_instruction, query_instruction_format)
        self.passage_instruction = (passage_instruction, passage_instruction_format)
        self.batch_size = batch_size
        self.max_tokens_per_batch = max_tokens_per_batch
        self.show_progress = show_progress
        self.last_truncated = 0
        self.calibration = load_calibration(self.path)  # normalize=True uses its fitted sigmoid when present
        tpl = pair_template(self.tokenizer)
        self._types = (tpl.first_type, tpl.second_type) if (tpl.first_type, tpl.second_type) != (0, 0) else None
        self._parallel = DevicePool(self, self.devices, self.path, trust_remote_code=remote)

    def close(self) -> None:
        """Stop the per-device worker processes, if any were started."""
        self._parallel.close()

    def engine_config(self, batch_size: int | None = None) -> EngineConfig:
        """Right-padded token-budget batches on this reranker's device."""
        tok = self.tokenizer
        pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
        return EngineConfig(
            device=self.device,
            batch_size=batch_size or self.batch_size,
            max_tokens_per_batch=self.max_tokens_per_batch,
            pad_id=int(pad),
            padding_side="right",
        )

    def tokenize_pairs(
        self, pairs: Sequence[tuple[str, str]], max_length: int | None = None, query_max_length: int | None = None
    ) -> PairTokens:
        """Token ids per pair (instructions applied), as the model will see them."""
        length = cap_length(max_length, self.tokenizer, self.model.config) if max_length else self.max_length
        q_len = query_max_length or self.query_max_length or length * 3 // 4
        queries = apply_instruction([q for q, _ in pairs], *self.query_instruction)
        passages = apply_instruction([p for _, p in pairs], *self.passage_instruction)
        tokens = cross_encoder_pairs(self.tokenizer, queries, passages, length, q_len)
        self.last_truncated = tokens.num_truncated
        return tokens

    def compute_score(
        self,
        sentence_pairs: Any,
        *,
        normalize: bool | None = None,
        batch_size: int | None = None,
        max_length: int | None = None,
        query_max_length: int | None = None,
        show_progress: bool | None = None,
    ) -> list[float]:
        """Relevance score per ``(query, passage)`` pair: raw logits, or sigmoid-ed with ``normalize=True``
        (the folder's fitted ``reranker_calibration.json`` sigmoid when it has one).

        A single pair still returns a one-element list (as the reference does).

        Raises:
            TypeError: malformed pairs (the message names the index).
        """
        pairs, _ = as_pairs(sentence_pairs)
        if not pairs:
            return []
        if self._parallel.wants(len(pairs)):
            kw = {"normalize": normalize, "batch_size": batch_size, "max_length": max_length}
            return parallel_scores(self, pairs, query_max_length=query_max_length, **kw)
        tokens = self.tokenize_pairs(pairs, max_length, query_max_length)

        def step(batch: Any) -> torch.Tensor:
            kwargs: dict[str, Any] = {}
            if self._types is not None:
                head = torch.as_tensor(tokens.head_len[batch.indices], device=batch.input_ids.device)
                pos = torch.arange(batch.input_ids.shape[1], device=head.device).unsqueeze(0)
                first, second = self._types
                types = torch.where(pos < head.unsqueeze(1), first, second)
                kwargs["token_type_ids"] = types * batch.attention_mask
            logits = self.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, **kwargs).logits
            return logits.view(-1).float()  # one label: (B, 1) -> (B,)

        with torch.inference_mode():
            scores = run_batches(
                tokens.ids,
                step,
                self.engine_config(batch_size),
                show_progress=self.show_progress if show_progress is None else show_progress,
                desc="Reranking",
            )
        if self.normalize if normalize is None else normalize:
            scores = self.calibration.probabilities(scores) if self.calibration else sigmoid(scores)
        return [float(s) for s in scores]

    def rerank(
        self, query: str, documents: Sequence[Any], top_k: int | None = None, *, normalize: bool | None = None
    ) -> list[RerankResult]:
        """Score ``documents`` (strings or ``{"title","text"}`` dicts) against ``query``, best first."""
        return rerank_with(self.compute_score, query, documents, top_k, normalize=normalize)


def parallel_scores(model: Any, pairs: list[tuple[str, str]], **kwargs: Any) -> Any:
    """``model.compute_score`` split across its device workers; scores in input order, truncations summed."""
    parts = model._parallel.map(scores_chunk, pairs, show_progress=False, **kwargs)
    model.last_truncated = sum(n for _, n in parts)
    return join_scores([p for p, _ in parts])


def rerank_with(
    score_fn: Any, query: str, documents: Sequence[Any], top_k: int | None, **kwargs: Any
) -> list[RerankResult]:
    """Shared ``rerank``: validate, score ``(query, doc)`` pairs with ``score_fn``, sort.

    Raises:
        TypeError: ``query`` is not a string or ``documents`` not a list.
        ValueError: an empty query, or ``top_k`` < 1 (``None`` keeps every document).
    """
    if not isinstance(query, str):
        raise TypeError(f"query must be a string, got {type(query).__name__}")
    if not query.strip():
        raise ValueError("query is empty")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be a positive integer (or None for all documents), got {top_k!r}")
    if isinstance(documents, (str, Mapping)) or not isinstance(documents, Sequence):
        raise TypeError(
            f"documents must be a list of strings or {{'title','text'}} dicts, got {type(documents).__name__}"
        )
    texts = [corpus_text(d, i) for i, d in enumerate(documents)]
    scores = score_fn([(query, t) for t in texts], **kwargs) if texts else []
    if scores and isinstance(scores[0], list):  # several cutoff layers: rank by the last (deepest) one
        scores = scores[-1]
    finite = [s if not math.isnan(s) else -math.inf for s in scores]
    return rank(finite, list(documents), top_k)
