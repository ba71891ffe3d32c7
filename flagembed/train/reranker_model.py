"""The trainable reranker: a backbone plus the score read-out the inference rerankers use, and its saved layout.

- ``encoder``: ``AutoModelForSequenceClassification(num_labels=1)``; score = the logit (a new head when the
  checkpoint has none). Saved as a plain HF folder that ``Reranker`` and sentence-transformers'
  ``CrossEncoder`` load (``config.sentence_transformers.activation_fn`` = Identity, so both return raw logits).
- ``decoder``: ``AutoModelForCausalLM`` (LoRA optional); score = logit of "Yes" at the last real token
  (:func:`flagembed.models.llm_scorer.yes_logits`, the function ``LLMReranker`` scores with).
- ``layerwise``: the same LM plus one ``Linear(hidden, 1)`` head per layer count ``start_layer .. L``
  (initialised from the LM head's "Yes" row, or from the checkpoint's ``layer_heads.safetensors``), applied
  to the final-normed state after each layer. Every scored layer is returned, so every head is trained (the
  packaged reference passes no cutoff layers and trains only the last one). Heads are saved as
  ``layer_heads.safetensors``, the file ``LayerwiseReranker`` loads.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from flagembed.models.layer_runner import decoder_stack, num_layers, run_layers
from flagembed.models.llm_scorer import LayerHeads, load_layer_heads, save_layer_heads, yes_logits, yes_token_id

logger = logging.getLogger(__name__)

IDENTITY_ACTIVATION = "torch.nn.modules.linear.Identity"


class RerankerScorer(nn.Module):
    """``forward(input_ids, attention_mask[, token_type_ids])`` → pair scores ``(N,)`` (layerwise: ``(N, layers)``)."""

    def __init__(
        self,
        backbone: nn.Module,
        model_type: str,
        *,
        yes_id: int | None = None,
        heads: LayerHeads | None = None,
        layers: list[int] | None = None,
    ) -> None:
        super().__init__()
        if model_type != "encoder" and yes_id is None:
            raise ValueError(f"model_type {model_type!r} needs the 'Yes' token id")
        if model_type == "layerwise" and (heads is None or not layers):
            raise ValueError("model_type 'layerwise' needs score heads and the layers they score")
        self.backbone = backbone
        self.model_type = model_type
        self.yes_id = yes_id
        self.heads = heads
        self.layers = list(layers or [])

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Scores of right-padded pairs."""
        if self.model_type == "encoder":
            kwargs = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
            out = self.backbone(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
            return out.logits.reshape(-1).float()
        if self.model_type == "decoder":
            return yes_logits(self.backbone, input_ids, attention_mask, int(self.yes_id))  # type: ignore[arg-type]
        assert self.heads is not None
        states = run_layers(
            self.backbone, attention_mask, start=0, stop=max(self.layers), capture=self.layers, input_ids=input_ids
        )
        norm = decoder_stack(self.backbone).norm
        return torch.stack([self.heads.score(k, norm(states[k]), attention_mask) for k in self.layers], dim=1)

    def gradient_checkpointing_enable(self, **kwargs: Any) -> None:
        """Delegate to the backbone (the HF Trainer calls this for ``--gradient_checkpointing``)."""
        self.backbone.gradient_checkpointing_enable(**kwargs)
        if hasattr(self.backbone, "enable_input_require_grads"):
            self.backbone.enable_input_require_grads()


def build_layer_heads(
    path: str | Path, model: nn.Module, yes_id: int, start_layer: int, head_multi: bool
) -> tuple[LayerHeads, list[int]]:
    """Heads for layers ``start_layer .. L``: the checkpoint's own, else copies of the LM head's "Yes" row.

    Raises:
        ValueError: ``start_layer`` above the number of layers, or a checkpoint without heads in that range.
    """
    total = num_layers(model)
    if not 1 <= start_layer <= total:
        raise ValueError(f"start_layer {start_layer} is outside 1..{total} (the model has {total} layers)")
    loaded = load_layer_heads(path, model, yes_id)
    layers = [k for k in loaded.layers if k >= start_layer]
    if not layers:
        raise ValueError(f"{path}: no score head at or above start_layer {start_layer}; has {loaded.layers}")
    if head_multi:
        chosen = {k: loaded.heads[str(k)] for k in layers}
    else:
        shared = loaded.heads[str(layers[-1])]
        chosen = {k: shared for k in layers}
    heads = LayerHeads(chosen, loaded.scale, loaded.softcap)
    for p in heads.parameters():
        p.requires_grad_(True)
    return heads, layers


def _plain(module: nn.Module) -> nn.Module:
    """The model inside DDP/accelerate wrappers."""
    while hasattr(module, "module") and isinstance(module.module, nn.Module):
        module = module.module
    return module


def save_reranker(scorer: nn.Module, tokenizer: Any, folder: str | Path, backbone: nn.Module | None = None) -> Path:
    """Write ``scorer`` as a folder the inference rerankers load (``backbone`` overrides, e.g. a merged LM).

    A LoRA backbone (a ``PeftModel``) is saved as its adapter; pass the merged model as ``backbone`` for a
    self-contained folder.
    """
    scorer = _plain(scorer)
    assert isinstance(scorer, RerankerScorer)
    model = backbone if backbone is not None else scorer.backbone
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    if scorer.model_type == "encoder":
        extra = dict(getattr(model.config, "sentence_transformers", None) or {})
        extra["activation_fn"] = IDENTITY_ACTIVATION  # raw logits, as Reranker(normalize=False)
        model.config.sentence_transformers = extra
    model.save_pretrained(str(out), safe_serialization=True)
    tokenizer.save_pretrained(str(out))
    _portable_tokenizer_class(out)
    if scorer.model_type == "layerwise":
        assert scorer.heads is not None
        weights = {k: scorer.heads.heads[str(k)].weight.detach().clone() for k in scorer.layers}
        save_layer_heads(out, weights, scale=scorer.heads.scale, softcap=scorer.heads.softcap)
    return out


def _portable_tokenizer_class(folder: Path) -> None:
    """Name a generic fast tokenizer ``PreTrainedTokenizerFast`` (transformers 5 writes ``TokenizersBackend``,
    which transformers 4.x, and so FlagEmbedding on it, cannot load); both versions read the former."""
    import json

    from flagembed._io import save_json

    path = folder / "tokenizer_config.json"
    if not path.is_file():
        return
    config = json.loads(path.read_text(encoding="utf-8"))
    if config.get("tokenizer_class") == "TokenizersBackend":
        config["tokenizer_class"] = "PreTrainedTokenizerFast"
        save_json(path, config)


def yes_id_for(tokenizer: Any) -> int:
    """The "Yes" token the score is read from: the first token, as ``LLMReranker`` reads it.

    The reference's training takes the last token of ``tokenizer("Yes")`` and its inference the first; they
    agree when "Yes" is one token, and using the inference's choice keeps training and scoring identical.
    """
    return yes_token_id(tokenizer)
