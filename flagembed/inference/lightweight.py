"""LightweightReranker: layerwise scoring plus passage-token compression mid-stack (REFERENCE.md §2.6).

At each layer in ``compress_layers`` (below the deepest cutoff) the passage's hidden states are
replaced by means of ``compress_ratio`` consecutive states; query and prompt states are kept, and
the remaining layers run on the shorter sequence (positions restart at 0). Generic over Hugging Face
decoders (written for Gemma-2); the published ``BAAI/bge-reranker-v2.5-gemma2-lightweight`` ships
its own modelling code, which runs only when you pass ``trust_remote_code=True``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import partial
from typing import Any

import torch

from flagembed.engine import Batch
from flagembed.inference.layerwise import LayerwiseReranker, Scores
from flagembed.inference.pair_inputs import LIGHTWEIGHT_PROMPT, PairTokens
from flagembed.inference.parallel import remember_init
from flagembed.inference.reranker import as_pairs, parallel_scores
from flagembed.models.layer_runner import run_layers, token_compress
from flagembed.models.pooling import last_token


class LightweightReranker(LayerwiseReranker):
    """Layerwise reranker that compresses passage tokens by ``compress_ratio`` at ``compress_layers``.

    ``compress_ratio=1`` (the default) means no compression, i.e. a plain layerwise reranker.

    Example:
        >>> rr = LightweightReranker("BAAI/bge-reranker-v2.5-gemma2-lightweight", trust_remote_code=True)
        >>> rr.compute_score(pairs, cutoff_layers=[28], compress_ratio=2, compress_layers=[24, 40])
    """

    default_prompt = LIGHTWEIGHT_PROMPT
    desc = "Lightweight reranking"

    @remember_init
    def __init__(
        self,
        model_name_or_path: str | os.PathLike[str],
        *,
        cutoff_layers: int | Sequence[int] | None = None,
        compress_layers: Sequence[int] = (8,),
        compress_ratio: int = 1,
        **kwargs: Any,
    ) -> None:
        super().__init__(model_name_or_path, cutoff_layers=cutoff_layers, **kwargs)
        self.compress_layers = list(compress_layers)
        self.compress_ratio = _check_ratio(compress_ratio)

    def compute_score(  # type: ignore[override]
        self,
        sentence_pairs: Any,
        *,
        cutoff_layers: int | Sequence[int] | None = None,
        compress_layers: Sequence[int] | None = None,
        compress_ratio: int | None = None,
        normalize: bool | None = None,
        prompt: str | None = None,
        batch_size: int | None = None,
        max_length: int | None = None,
        query_max_length: int | None = None,
        show_progress: bool | None = None,
    ) -> Scores:
        """Scores per pair from each cutoff layer, with passage compression; see :class:`LayerwiseReranker`.

        Raises:
            TypeError: malformed pairs (the message names the index).
            ValueError: no usable cutoff layer, or ``compress_ratio < 1``.
        """
        pairs, _ = as_pairs(sentence_pairs)
        if self._parallel.wants(len(pairs)):
            kw = {"cutoff_layers": cutoff_layers, "compress_layers": compress_layers, "compress_ratio": compress_ratio}
            kw.update(normalize=normalize, prompt=prompt, batch_size=batch_size, max_length=max_length)
            return parallel_scores(self, pairs, query_max_length=query_max_length, **kw)
        layers = self.resolve_cutoffs(cutoff_layers)
        ratio = _check_ratio(self.compress_ratio if compress_ratio is None else compress_ratio)
        where = list(self.compress_layers if compress_layers is None else compress_layers)
        step = partial(self._compress_step, layers=layers, compress_layers=where, ratio=ratio)
        scores = self._score_matrix(
            pairs, step, prompt, batch_size, max_length, query_max_length, show_progress, width=len(layers)
        )
        out = self._shape(scores, normalize)
        return out[0] if len(out) == 1 else out

    def _compress_step(
        self, batch: Batch, tokens: PairTokens, layers: list[int], compress_layers: list[int], ratio: int
    ) -> torch.Tensor:
        mask = batch.attention_mask
        head = torch.as_tensor(tokens.head_len[batch.indices], device=mask.device)
        tail = torch.as_tensor(tokens.tail_len[batch.indices], device=mask.device)
        if self.remote:
            outputs = self.model(
                input_ids=batch.input_ids,
                attention_mask=mask,
                output_hidden_states=True,
                compress_layer=compress_layers,
                compress_ratio=ratio,
                query_lengths=head,
                prompt_lengths=tail,
                cutoff_layers=layers,
            )
            return torch.stack(
                [last_token(lg, m).reshape(-1).float() for lg, m in zip(outputs.logits, outputs.attention_masks)],
                dim=1,
            )
        top = max(layers)
        # compression happens before layer c runs (c > 0), and only below the deepest cutoff
        points = sorted({c for c in compress_layers if 0 < c < top}) if ratio > 1 else []
        scores: dict[int, torch.Tensor] = {}
        start, hidden = 0, None
        for end in [*points, top]:
            wanted = [k for k in layers if start < k <= end]
            states = run_layers(
                self.model,
                mask,
                start=start,
                stop=end,
                capture=sorted({*wanted, end}),
                input_ids=batch.input_ids if start == 0 else None,
                hidden=hidden,
            )
            if wanted:
                scores.update(zip(wanted, self._head_scores(states, mask, wanted).unbind(1)))
            if end != top:
                hidden, mask = token_compress(states[end], mask, head, tail, ratio)
            start = end
        return torch.stack([scores[k] for k in layers], dim=1)


def _check_ratio(ratio: int) -> int:
    if isinstance(ratio, bool) or not isinstance(ratio, int) or ratio < 1:
        raise ValueError(f"compress_ratio must be an int >= 1, got {ratio!r}")
    return ratio
