"""An own decoding loop over beacon steps: greedy or temperature/top-k/top-p sampling, eos and stop lists.

It does not use GenerationMixin internals: the state lives in the beacon session, and every new token is one
``feed`` (the planner closes windows, moves beacons into memory and re-bases positions as it goes).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


def _stop_ids(model: Any, eos_token_id: int | Sequence[int] | None, stop_token_ids: Sequence[int] | None) -> set[int]:
    if eos_token_id is None:
        gen = getattr(model.model, "generation_config", None)
        eos_token_id = getattr(gen, "eos_token_id", None)
        if eos_token_id is None:
            eos_token_id = getattr(model.config, "eos_token_id", None)
    ids = set() if eos_token_id is None else {eos_token_id} if isinstance(eos_token_id, int) else set(eos_token_id)
    return ids | set(stop_token_ids or ())


def sample_next(
    logits: torch.Tensor,
    do_sample: bool,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Next ids [B] from logits [B, V]: argmax, or a draw after temperature, top-k and top-p (nucleus) filters."""
    if not do_sample:
        return logits.argmax(dim=-1)
    if temperature <= 0:
        raise ValueError(f"temperature={temperature}: need > 0 when sampling")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p={top_p}: need 0 < top_p <= 1")
    logits = logits / temperature
    if top_k > 0:
        kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop = cum - sorted_logits.softmax(-1) >= top_p  # keep the smallest prefix whose mass reaches top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    probs = logits.softmax(-1)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


@torch.no_grad()
def generate(
    model: Any,
    input_ids: torch.Tensor,
    max_new_tokens: int = 20,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    eos_token_id: int | Sequence[int] | None = None,
    stop_token_ids: Sequence[int] | None = None,
    attention_mask: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    pad_token_id: int | None = None,
    **_: Any,
) -> torch.Tensor:
    """Prompt + generated ids [B, n + k] of a ``BeaconModel``; finished rows are padded with ``pad_token_id``
    (default: the first stop id). The memory is reset before the prompt."""
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens={max_new_tokens}: need >= 0")
    if attention_mask is not None and not bool(attention_mask.all()):
        raise ValueError("attention_mask has padding: the beacon runtime supports unpadded sequences only")
    stops = _stop_ids(model, eos_token_id, stop_token_ids)
    pad = pad_token_id if pad_token_id is not None else (min(stops) if stops else 0)
    session = model.session
    was_training = session.training
    session.training = session.planner.training = False
    session.reset()
    try:
        out = [input_ids]
        logits = session.feed(input_ids, logits="last").logits
        finished = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        for step in range(max_new_tokens):
            nxt = sample_next(logits[:, -1], do_sample, temperature, top_k, top_p, generator)
            nxt = torch.where(finished, torch.full_like(nxt, pad), nxt)
            out.append(nxt[:, None])
            finished |= torch.tensor([int(t) in stops for t in nxt.tolist()], device=nxt.device)
            if bool(finished.all()) or step == max_new_tokens - 1:
                break
            logits = session.feed(nxt[:, None], logits="last").logits
        return torch.cat(out, dim=1)
    finally:
        session.training = session.planner.training = was_training
