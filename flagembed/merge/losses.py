"""Each candidate model's average loss on a few examples, for LM-Cocktail's data-driven weights.

Inputs are built once with model 0's tokenizer (as the reference does) and every model sees the same
sampled negatives. Encoding goes through the engine (length-sorted batches); the losses are then:

* encoder: in-batch contrastive loss. Per query ``pos[0]`` plus ``neg_number`` sampled negatives;
  vectors pooled with the model's pooling (``models.pooling``, CLS for BGE) and L2-normalized;
  ``scores = q @ p.T / 0.05`` over ``batch_size`` consecutive queries, target ``arange(B) * G``;
  averaged over those groups (exactly the reference's arithmetic).
* reranker: cross-entropy over each group ``[pos[0], negs...]`` of cross-encoder scores, target 0,
  averaged over examples (the reference has no reranker branch).
* decoder: causal-LM loss on the ``output`` tokens (``encode(input + " " + output) + [eos]``, prompt
  tokens masked), averaged per example, then over examples. The reference averages per batch of
  ``batch_size`` padded examples, so its number depends on the batching; ours equals it at batch size 1.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from flagembed.engine import EngineConfig, pad_ids, resolve_device, resolve_dtype, run_batches, tokenize
from flagembed.inference.reranker import cap_length
from flagembed.models import TextEncoder, load_backbone, load_tokenizer, resolve_settings
from flagembed.models.pooling import check_pooling

logger = logging.getLogger(__name__)

CONTRASTIVE_TEMPERATURE = 0.05  # the reference's fixed score scale for the encoder loss
ENCODE_BATCH = 32  # texts per forward pass when encoding (grouping for the loss is separate)


def check_examples(examples: Sequence[dict[str, Any]], model_type: str, neg_number: int) -> None:
    """Validate few-shot examples for ``model_type``.

    Raises:
        ValueError: no examples, a missing/empty field, or no negatives where ``neg_number > 0``.
        TypeError: a field of the wrong type; the message names the example index and the value.
    """
    if isinstance(examples, (str, dict)) or len(examples) == 0:
        raise ValueError("example_data is empty; give at least one example")
    if neg_number < 0:
        raise ValueError(f"neg_number must be >= 0, got {neg_number}")
    for i, ex in enumerate(examples):
        if not isinstance(ex, dict):
            raise TypeError(f"example {i} is {type(ex).__name__}, expected a dict")
        if model_type == "decoder":
            for key in ("input", "output"):
                if not isinstance(ex.get(key), str):
                    raise TypeError(f"example {i}: {key!r} must be a string, got {ex.get(key)!r}")
            continue
        if not isinstance(ex.get("query"), str):
            raise TypeError(f"example {i}: 'query' must be a string, got {ex.get('query')!r}")
        for key in ("pos", "neg"):
            value = ex.get(key, [] if key == "neg" else None)
            if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
                raise TypeError(f"example {i}: {key!r} must be a list of strings, got {value!r}")
        if not ex["pos"]:
            raise ValueError(f"example {i}: 'pos' is empty; give at least one positive passage")
        if neg_number > 0 and not ex.get("neg"):
            raise ValueError(f"example {i}: 'neg' is empty but neg_number={neg_number}; give negatives or use 0")


def loss_weights(losses: Sequence[float], temperature: float) -> list[float]:
    """``softmax(-loss / temperature)``, computed in float64."""
    x = -np.asarray(losses, dtype=np.float64) / temperature
    e = np.exp(x - x.max())
    return (e / e.sum()).tolist()


def sample_groups(examples: Sequence[dict[str, Any]], neg_number: int, seed: int) -> list[list[str]]:
    """``[pos[0], *negatives]`` per example; negatives are sampled once, repeated if there are too few."""
    rng = random.Random(seed)
    groups = []
    for ex in examples:
        negs: list[str] = list(ex.get("neg") or [])
        if neg_number and len(negs) < neg_number:
            negs = negs * math.ceil(neg_number / len(negs))
        groups.append([ex["pos"][0], *rng.sample(negs, neg_number)])
    return groups


def example_losses(
    paths: Sequence[Path],
    model_type: str,
    examples: Sequence[dict[str, Any]],
    *,
    batch_size: int = 2,
    max_input_length: int = 2048,
    neg_number: int = 7,
    seed: int = 42,
    device: str | torch.device | None = None,
    dtype: str = "fp32",
    pooling: str | None = None,
    trust_remote_code: bool = False,
    show_progress: bool | None = False,
) -> list[float]:
    """The average loss of each model folder in ``paths`` on ``examples`` (see the module docstring).

    Raises:
        ValueError: bad examples or arguments, a reranker with more than one label, or a decoder
            example with no ``output`` token left after truncation.
    """
    check_examples(examples, model_type, neg_number)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    tok = load_tokenizer(paths[0], trust_remote_code=trust_remote_code)
    pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    cfg = EngineConfig(device=dev, batch_size=ENCODE_BATCH, pad_id=int(pad), padding_side="right")
    losses = []
    for path in paths:
        if model_type == "encoder":
            loss = _encoder_loss(path, tok, examples, cfg, batch_size, max_input_length, neg_number, seed, pooling,
                                 torch_dtype, trust_remote_code, show_progress)  # fmt: skip
        elif model_type == "reranker":
            loss = _reranker_loss(path, tok, examples, cfg, max_input_length, neg_number, seed, torch_dtype,
                                  trust_remote_code, show_progress)  # fmt: skip
        elif model_type == "decoder":
            cfg.batch_size = batch_size
            loss = _decoder_loss(path, tok, examples, cfg, max_input_length, torch_dtype, trust_remote_code,
                                 show_progress)  # fmt: skip
        else:
            raise ValueError(f"unknown model_type {model_type!r}; valid: encoder, reranker, decoder")
        logger.info("loss of %s on %d examples: %.6f", path, len(examples), loss)
        losses.append(loss)
    return losses


def model_limit(length: int, tok: Any, path: Path, trust_remote_code: bool) -> int:
    """``length`` capped by the tokenizer's and the model's position limit (as every other command caps it)."""
    from transformers import AutoConfig

    return cap_length(length, tok, AutoConfig.from_pretrained(str(path), trust_remote_code=trust_remote_code))


def _encoder_loss(
    path: Path,
    tok: Any,
    examples: Sequence[dict[str, Any]],
    cfg: EngineConfig,
    batch_size: int,
    max_input_length: int,
    neg_number: int,
    seed: int,
    pooling: str | None,
    dtype: torch.dtype,
    trust_remote_code: bool,
    show_progress: bool | None,
) -> float:
    settings = resolve_settings(str(path), path, pooling=pooling)
    max_len = model_limit(min(max_input_length, settings.max_length), tok, path, trust_remote_code)
    groups = sample_groups(examples, neg_number, seed)
    q_ids = tokenize(tok, [ex["query"] for ex in examples], max_len).ids
    p_ids = tokenize(tok, [p for g in groups for p in g], max_len).ids
    backbone = load_backbone(path, dtype=dtype, trust_remote_code=trust_remote_code).to(cfg.device)
    encoder = TextEncoder(backbone, check_pooling(settings.pooling), normalize=True)

    def step(batch: Any) -> torch.Tensor:
        return encoder(batch.input_ids, batch.attention_mask)

    with torch.inference_mode():
        q = torch.from_numpy(run_batches(q_ids, step, cfg, show_progress=show_progress, desc="Queries"))
        p = torch.from_numpy(run_batches(p_ids, step, cfg, show_progress=show_progress, desc="Passages"))
    g = 1 + neg_number
    total, count = 0.0, 0
    for s in range(0, len(examples), batch_size):
        qb, pb = q[s : s + batch_size], p[s * g : (s + batch_size) * g]
        scores = qb @ pb.T / CONTRASTIVE_TEMPERATURE
        target = torch.arange(len(qb)) * g
        total += float(F.cross_entropy(scores, target))
        count += 1
    return total / count


def _reranker_loss(
    path: Path,
    tok: Any,
    examples: Sequence[dict[str, Any]],
    cfg: EngineConfig,
    max_input_length: int,
    neg_number: int,
    seed: int,
    dtype: torch.dtype,
    trust_remote_code: bool,
    show_progress: bool | None,
) -> float:
    from transformers import AutoModelForSequenceClassification

    from flagembed._compat import dtype_kwargs, from_pretrained

    groups = sample_groups(examples, neg_number, seed)
    queries = [ex["query"] for ex, grp in zip(examples, groups) for _ in grp]
    passages = [p for grp in groups for p in grp]
    max_len = model_limit(max_input_length, tok, path, trust_remote_code)
    enc = tok(queries, passages, truncation=True, max_length=max_len, padding=False, return_token_type_ids=True)
    types = enc.get("token_type_ids") if "token_type_ids" in tok.model_input_names else None
    model = from_pretrained(
        AutoModelForSequenceClassification, str(path), trust_remote_code=trust_remote_code, **dtype_kwargs(dtype)
    )
    model = model.eval().to(cfg.device)
    if model.config.num_labels != 1:
        raise ValueError(f"{path}: a reranker must have one output label, this one has {model.config.num_labels}")

    def step(batch: Any) -> torch.Tensor:
        kwargs = {}
        if types is not None:
            tt, _ = pad_ids([types[i] for i in batch.indices], 0, "right")
            kwargs["token_type_ids"] = torch.from_numpy(tt[:, : batch.input_ids.shape[1]]).to(cfg.device)
        out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, **kwargs)
        return out.logits.float().reshape(-1)

    with torch.inference_mode():
        scores = torch.from_numpy(run_batches(enc["input_ids"], step, cfg, show_progress=show_progress))
    grouped = scores.view(len(examples), 1 + neg_number)
    return float(F.cross_entropy(grouped, torch.zeros(len(examples), dtype=torch.long)))


def decoder_inputs(tok: Any, examples: Sequence[dict[str, Any]], max_input_length: int) -> tuple[list, list]:
    """Token ids and labels (``-100`` on prompt tokens) per example, as the reference builds them."""
    if tok.eos_token_id is None:
        logger.warning("the tokenizer has no eos token; outputs are scored without one")
    ids_all, labels_all = [], []
    for i, ex in enumerate(examples):
        ids = tok.encode(ex["input"] + " " + ex["output"])
        if tok.eos_token_id is not None:
            ids.append(tok.eos_token_id)
        prompt = tok.encode(ex["input"])
        labels = ([-100] * len(prompt) + ids[len(prompt) :])[: len(ids)][:max_input_length]
        ids = ids[:max_input_length]
        if all(x == -100 for x in labels[1:]):
            raise ValueError(
                f"example {i}: no output token left to score after truncation to max_input_length={max_input_length}"
            )
        ids_all.append(ids)
        labels_all.append(labels)
    return ids_all, labels_all


def _decoder_loss(
    path: Path,
    tok: Any,
    examples: Sequence[dict[str, Any]],
    cfg: EngineConfig,
    max_input_length: int,
    dtype: torch.dtype,
    trust_remote_code: bool,
    show_progress: bool | None,
) -> float:
    from transformers import AutoModelForCausalLM

    from flagembed._compat import dtype_kwargs, from_pretrained

    ids, labels = decoder_inputs(tok, examples, model_limit(max_input_length, tok, path, trust_remote_code))
    model = from_pretrained(AutoModelForCausalLM, str(path), trust_remote_code=trust_remote_code, **dtype_kwargs(dtype))
    model = model.eval().to(cfg.device)

    def step(batch: Any) -> torch.Tensor:
        lab, _ = pad_ids([labels[i] for i in batch.indices], -100, "right")
        lab_t = torch.from_numpy(lab[:, 1:]).to(cfg.device)
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, :-1].float()
        nll = F.cross_entropy(logits.transpose(1, 2), lab_t, ignore_index=-100, reduction="none")
        return torch.stack([nll.sum(1), (lab_t != -100).sum(1).float()], dim=1)

    with torch.inference_mode():
        sums = run_batches(ids, step, cfg, show_progress=show_progress)
    return float(np.mean(sums[:, 0] / sums[:, 1]))
