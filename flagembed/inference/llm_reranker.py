"""LLMReranker: decoder-only rerankers scored by the "Yes" logit (bge-reranker-v2-gemma and the like)."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from flagembed.engine import Batch, EngineConfig, resolve_dtype, run_batches
from flagembed.engine.devices import DeviceLike, DType, resolve_devices
from flagembed.inference.calibration import load_calibration
from flagembed.inference.inputs import apply_instruction
from flagembed.inference.pair_inputs import DEFAULT_LLM_PROMPT, PairTokens, llm_pairs
from flagembed.inference.parallel import DevicePool, remember_init
from flagembed.inference.reranker import (
    RerankResult,
    as_pairs,
    cap_length,
    parallel_scores,
    require_head_weights,
    rerank_with,
    sigmoid,
)
from flagembed.models import load_tokenizer, open_checkpoint
from flagembed.models.llm_scorer import yes_logits, yes_token_id

logger = logging.getLogger(__name__)


def load_causal_lm(
    path: str | os.PathLike[str],
    dtype: torch.dtype,
    trust_remote_code: bool,
    peft_path: str | None,
    name: str | os.PathLike[str] | None = None,
) -> Any:
    """``AutoModelForCausalLM`` in ``dtype``, with a PEFT adapter merged in when ``peft_path`` is given.

    Raises:
        ValueError: the checkpoint has no trained LM head (e.g. a cross-encoder or an embedder).
    """
    from transformers import AutoModelForCausalLM

    from flagembed._compat import dtype_kwargs, from_pretrained

    model, info = from_pretrained(
        AutoModelForCausalLM,
        str(path),
        trust_remote_code=trust_remote_code,
        output_loading_info=True,
        **dtype_kwargs(dtype),
    )
    require_head_weights(name or path, info, model.config, "LM head")
    if peft_path:
        try:
            from peft import PeftModel
        except ImportError as exc:
            raise ImportError(
                'peft_path needs the peft package: pip install "flagembed[train]" (or pip install peft)'
            ) from exc
        model = PeftModel.from_pretrained(model, str(peft_path)).merge_and_unload()
    return model.eval()


class LLMReranker:
    """Decoder-only reranker: ``<bos>A: {query}\\nB: {passage}\\n{prompt}`` → logit of "Yes" at the last token.

    Matches FlagEmbedding's ``FlagLLMReranker`` (REFERENCE.md §2.4): instructions ``"A: "``/``"B: "``,
    query cut to ``query_max_length`` (default ``max_length * 3 // 4``), passage cut so the pair fits,
    batches padded to a multiple of 8. On GPUs bf16 is used where supported; if an fp16 model
    produces NaN/inf scores (known for Gemma), the batch is recomputed in bf16 (or fp32) with a warning.

    Example:
        >>> rr = LLMReranker("BAAI/bge-reranker-v2-gemma")
        >>> rr.compute_score([("what is a panda?", "The giant panda is a bear.")])
    """

    default_prompt: str = DEFAULT_LLM_PROMPT
    always_bos: bool = False  # layerwise/lightweight prepend bos even when it equals the pad token
    desc = "LLM reranking"

    @remember_init
    def __init__(
        self,
        model_name_or_path: str | os.PathLike[str],
        *,
        peft_path: str | None = None,
        prompt: str | None = None,
        query_instruction: str | None = "A: ",
        query_instruction_format: str = "{}{}",
        passage_instruction: str | None = "B: ",
        passage_instruction_format: str = "{}{}",
        max_length: int = 512,
        query_max_length: int | None = None,
        normalize: bool = False,
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
        ckpt = open_checkpoint(
            model_name_or_path,
            revision=revision,
            cache_dir=cache_dir,
            token=token,
            local_files_only=local_files_only,
            trust_remote_code=trust_remote_code,
        )
        self.path, remote = ckpt.path, ckpt.trust_remote_code
        self.devices = resolve_devices(device)  # several devices: one worker process each (see compute_score)
        self.device = self.devices[0]
        self.dtype = resolve_dtype(dtype, self.device, preferred=_preferred_half(self.device), cpu_bf16=True)
        self.tokenizer = load_tokenizer(self.path, trust_remote_code=remote)
        self.model = load_causal_lm(self.path, self.dtype, remote, peft_path, model_name_or_path).to(self.device)
        self.yes_id = yes_token_id(self.tokenizer)
        self.prompt = self.default_prompt if prompt is None else prompt
        self.query_instruction = (query_instruction, query_instruction_format)
        self.passage_instruction = (passage_instruction, passage_instruction_format)
        self.max_length = cap_length(max_length, self.tokenizer, self.model.config)
        self.query_max_length = query_max_length
        self.normalize = normalize
        self.batch_size = batch_size
        self.max_tokens_per_batch = max_tokens_per_batch
        self.show_progress = show_progress
        self.last_truncated = 0
        self.calibration = load_calibration(self.path)  # normalize=True uses its fitted sigmoid when present
        self._parallel = DevicePool(self, self.devices, self.path, trust_remote_code=remote)

    def close(self) -> None:
        """Stop the per-device worker processes, if any were started."""
        self._parallel.close()

    # ------------------------------------------------------------------ inputs
    @property
    def add_bos(self) -> bool:
        """Whether a bos token starts each input (the base reranker skips it when bos == pad)."""
        tok = self.tokenizer
        if tok.bos_token_id is None:
            return False
        return self.always_bos or tok.bos_token_id != tok.pad_token_id

    def engine_config(self, batch_size: int | None = None) -> EngineConfig:
        """Right-padded batches (multiple of 8 tokens, as the reference's collator)."""
        tok = self.tokenizer
        pad = next((t for t in (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) if t is not None), 0)
        return EngineConfig(
            device=self.device,
            batch_size=batch_size or self.batch_size,
            max_tokens_per_batch=self.max_tokens_per_batch,
            pad_id=int(pad),
            padding_side="right",
            pad_to_multiple_of=8,
        )

    def tokenize_pairs(
        self,
        pairs: Sequence[tuple[str, str]],
        prompt: str | None = None,
        max_length: int | None = None,
        query_max_length: int | None = None,
    ) -> PairTokens:
        """Token ids per pair, exactly as the model sees them."""
        length = cap_length(max_length, self.tokenizer, self.model.config) if max_length else self.max_length
        q_len = query_max_length or self.query_max_length or length * 3 // 4
        queries = apply_instruction([q for q, _ in pairs], *self.query_instruction)
        passages = apply_instruction([p for _, p in pairs], *self.passage_instruction)
        text_prompt = self.prompt if prompt is None else prompt
        tokens = llm_pairs(self.tokenizer, queries, passages, length, q_len, text_prompt, self.add_bos)
        self.last_truncated = tokens.num_truncated
        return tokens

    # ------------------------------------------------------------------ scoring
    def compute_score(
        self,
        sentence_pairs: Any,
        *,
        normalize: bool | None = None,
        prompt: str | None = None,
        batch_size: int | None = None,
        max_length: int | None = None,
        query_max_length: int | None = None,
        show_progress: bool | None = None,
    ) -> list[float]:
        """Yes-logit per ``(query, passage)`` pair (sigmoid-ed with ``normalize=True``); always a list.

        Raises:
            TypeError: malformed pairs (the message names the index).
        """
        pairs, _ = as_pairs(sentence_pairs)
        if self._parallel.wants(len(pairs)):
            kw = {"normalize": normalize, "prompt": prompt, "batch_size": batch_size, "max_length": max_length}
            return parallel_scores(self, pairs, query_max_length=query_max_length, **kw)
        step = self._yes_step
        scores = self._score_matrix(pairs, step, prompt, batch_size, max_length, query_max_length, show_progress)
        return self._shape(scores, normalize)[0]

    def rerank(
        self, query: str, documents: Sequence[Any], top_k: int | None = None, **kwargs: Any
    ) -> list[RerankResult]:
        """Score ``documents`` against ``query``, best first (``kwargs`` go to ``compute_score``)."""
        return rerank_with(self.compute_score, query, documents, top_k, **kwargs)

    def _yes_step(self, batch: Batch, tokens: PairTokens) -> torch.Tensor:
        return yes_logits(self.model, batch.input_ids, batch.attention_mask, self.yes_id).unsqueeze(1)

    def _score_matrix(
        self,
        sentence_pairs: Any,
        step: Callable[[Batch, PairTokens], torch.Tensor],
        prompt: str | None,
        batch_size: int | None,
        max_length: int | None,
        query_max_length: int | None,
        show_progress: bool | None,
        width: int = 1,
    ) -> np.ndarray:
        """(N, width) float32 scores: tokenize, then run ``step`` over engine batches with the NaN guard."""
        pairs, _ = as_pairs(sentence_pairs)
        if not pairs:
            return np.zeros((0, width), dtype=np.float32)
        tokens = self.tokenize_pairs(pairs, prompt, max_length, query_max_length)

        def guarded(batch: Batch) -> torch.Tensor:
            out = step(batch, tokens)
            if not bool(torch.isfinite(out).all()) and self._model_dtype() == torch.float16:
                self._leave_fp16()
                out = step(batch, tokens)
            return out

        with torch.inference_mode():
            return run_batches(
                tokens.ids,
                guarded,
                self.engine_config(batch_size),
                show_progress=self.show_progress if show_progress is None else show_progress,
                desc=self.desc,
            )

    def _model_dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def _leave_fp16(self) -> None:
        """Switch an fp16 model that overflowed to bf16 (where supported) or fp32, for good."""
        target = torch.bfloat16 if _bf16_ok(self.device) else torch.float32
        warnings.warn(
            f"fp16 produced NaN/inf reranker scores (a known fp16 overflow, e.g. in Gemma); "
            f"recomputing in {str(target).replace('torch.', '')} from now on",
            stacklevel=4,
        )
        self.model.to(target)
        self.dtype = target

    def _shape(
        self, scores: np.ndarray, normalize: bool | None, layers: Sequence[int] | None = None
    ) -> list[list[float]]:
        if self.normalize if normalize is None else normalize:
            if self.calibration is None:
                scores = sigmoid(scores)
            else:
                cols = layers if layers is not None else [None] * scores.shape[1]
                scores = np.stack([self.calibration.probabilities(scores[:, j], k) for j, k in enumerate(cols)], 1)
        return [[float(s) for s in scores[:, j]] for j in range(scores.shape[1])]


def _bf16_ok(device: torch.device) -> bool:
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    return False


def _preferred_half(device: torch.device) -> str:
    """bf16 on accelerators that support it (LLM rerankers are trained in bf16), else fp16."""
    return "bf16" if device.type != "cuda" or _bf16_ok(device) else "fp16"
