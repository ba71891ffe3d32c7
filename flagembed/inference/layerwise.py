"""LayerwiseReranker: score from intermediate decoder layers, stopping after the deepest one asked for.

Generic over Hugging Face decoders (Llama, Gemma-2, Qwen2, Mistral, ...): the state after ``k``
layers goes through the final norm and the per-layer head ``k`` (REFERENCE.md §2.5). Heads come
from ``layer_heads.safetensors`` in the checkpoint (format: :mod:`flagembed.models.llm_scorer`),
else every layer uses the LM head's "Yes" row. The published
``BAAI/bge-reranker-v2-minicpm-layerwise`` ships its own modelling code: load it with
``trust_remote_code=True`` (your consent; without it loading fails and says so); then the checkpoint's own
``forward(cutoff_layers=...)`` computes the per-layer scores.
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Sequence
from functools import partial
from typing import Any

import torch

from flagembed.engine import Batch
from flagembed.inference.llm_reranker import LLMReranker
from flagembed.inference.pair_inputs import PairTokens
from flagembed.inference.parallel import remember_init
from flagembed.inference.reranker import as_pairs, parallel_scores
from flagembed.models.layer_runner import decoder_stack, run_layers
from flagembed.models.llm_scorer import LayerHeads, load_layer_heads
from flagembed.models.pooling import last_token

logger = logging.getLogger(__name__)

Scores = list[float] | list[list[float]]


class LayerwiseReranker(LLMReranker):
    """Decoder reranker with per-layer score heads and early exit at the deepest requested layer.

    ``compute_score(pairs, cutoff_layers=[k1, k2])`` returns one score list per layer (ascending
    layer order, as the reference); a single layer returns a flat list. Layers above the deepest
    cutoff are never run.

    Example:
        >>> rr = LayerwiseReranker("BAAI/bge-reranker-v2-minicpm-layerwise", trust_remote_code=True)
        >>> rr.compute_score([("what is a panda?", "The giant panda is a bear.")], cutoff_layers=[28])
    """

    always_bos = True
    desc = "Layerwise reranking"

    @remember_init
    def __init__(
        self,
        model_name_or_path: str | os.PathLike[str],
        *,
        cutoff_layers: int | Sequence[int] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(model_name_or_path, **kwargs)
        self.cutoff_layers = cutoff_layers
        params = inspect.signature(self.model.forward).parameters
        self.remote = "cutoff_layers" in params  # the checkpoint's own layerwise modelling code
        self.heads: LayerHeads | None = None
        if not self.remote:
            decoder_stack(self.model)  # fail early on models we cannot window
            self.heads = load_layer_heads(self.path, self.model, self.yes_id).to(self.device)

    @property
    def available_layers(self) -> list[int]:
        """Cutoff layers that have a score head."""
        if self.heads is not None:
            return self.heads.layers
        config = self.model.config
        start = int(getattr(config, "start_layer", 1))
        step = int(getattr(config, "layer_sep", 1))
        return list(range(start, int(config.num_hidden_layers) + 1, step))

    def resolve_cutoffs(self, cutoff_layers: int | Sequence[int] | None) -> list[int]:
        """Validated cutoff layers, ascending; unsupported ones are dropped with a warning (as the reference).

        Raises:
            ValueError: none of the requested layers has a head.
        """
        available = self.available_layers
        if cutoff_layers is None:
            cutoff_layers = self.cutoff_layers
        if cutoff_layers is None:
            return [available[-1]]
        wanted = [cutoff_layers] if isinstance(cutoff_layers, int) else list(cutoff_layers)
        for i, k in enumerate(wanted):
            if isinstance(k, bool) or not isinstance(k, int):
                raise TypeError(f"cutoff_layers[{i}] must be an int, got {type(k).__name__}: {k!r}")
        dropped = [k for k in wanted if k not in available]
        if dropped:
            logger.warning("cutoff layers %s have no score head and are dropped; valid: %s", dropped, available)
        kept = sorted({k for k in wanted if k in available})
        if not kept:
            raise ValueError(f"cutoff_layers {wanted} has no usable layer; valid: {available}")
        return kept

    def compute_score(  # type: ignore[override]
        self,
        sentence_pairs: Any,
        *,
        cutoff_layers: int | Sequence[int] | None = None,
        normalize: bool | None = None,
        prompt: str | None = None,
        batch_size: int | None = None,
        max_length: int | None = None,
        query_max_length: int | None = None,
        show_progress: bool | None = None,
    ) -> Scores:
        """Scores per pair from each cutoff layer: a list, or a list of lists for several layers.

        Raises:
            TypeError: malformed pairs (the message names the index).
            ValueError: no requested cutoff layer is available.
        """
        pairs, _ = as_pairs(sentence_pairs)
        if self._parallel.wants(len(pairs)):
            kw = {"cutoff_layers": cutoff_layers}
            kw.update(normalize=normalize, prompt=prompt, batch_size=batch_size, max_length=max_length)
            return parallel_scores(self, pairs, query_max_length=query_max_length, **kw)
        layers = self.resolve_cutoffs(cutoff_layers)
        step = partial(self._layer_step, layers=layers)
        scores = self._score_matrix(
            pairs, step, prompt, batch_size, max_length, query_max_length, show_progress, width=len(layers)
        )
        out = self._shape(scores, normalize, layers)
        return out[0] if len(out) == 1 else out

    def _layer_step(self, batch: Batch, tokens: PairTokens, layers: list[int]) -> torch.Tensor:
        mask = batch.attention_mask
        if self.remote:
            outputs = self.model(
                input_ids=batch.input_ids, attention_mask=mask, output_hidden_states=True, cutoff_layers=layers
            )
            return torch.stack([last_token(lg, mask).reshape(-1).float() for lg in outputs.logits], 1)
        states = run_layers(self.model, mask, start=0, stop=max(layers), capture=layers, input_ids=batch.input_ids)
        return self._head_scores(states, mask, layers)

    def _head_scores(self, states: dict[int, torch.Tensor], mask: torch.Tensor, layers: list[int]) -> torch.Tensor:
        assert self.heads is not None
        norm = decoder_stack(self.model).norm
        return torch.stack([self.heads.score(k, norm(states[k]), mask) for k in layers], dim=1)
