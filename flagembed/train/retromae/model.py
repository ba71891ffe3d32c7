"""RetroMAE: a masked-LM encoder whose CLS vector must let a one-layer "enhanced" decoder rebuild the text.

Encoder: ``AutoModelForMaskedLM`` on the whole-word-masked text (its MLM loss). Decoder (Xiao et al. 2022,
enhanced decoding), one transformer layer written here so it runs on any BERT-like model and on
transformers 4.4x and 5.x alike:

- query stream ``Q = Embeddings(inputs_embeds = CLS vector at every position)`` (CLS + position + type
  embedding): position-dependent, token-independent;
- key/value stream ``[CLS vector, Embeddings(original ids)[1:]]``;
- attention restricted per row by ``decoder_attention`` (a sampled whole-word mask, plus the row itself);
- output through the encoder's own MLM head; loss on every token but CLS/SEP.

Total loss = encoder MLM + decoder MLM (1:1).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class EnhancedDecoderLayer(nn.Module):
    """A post-norm BERT layer whose queries and keys/values come from two streams, with a matrix mask."""

    def __init__(self, hidden: int, heads: int, intermediate: int, eps: float, dropout: float, std: float) -> None:
        super().__init__()
        if hidden % heads:
            raise ValueError(f"hidden size {hidden} is not a multiple of the {heads} attention heads")
        self.heads = heads
        self.query, self.key, self.value = (nn.Linear(hidden, hidden) for _ in range(3))
        self.attn_out = nn.Linear(hidden, hidden)
        self.attn_norm = nn.LayerNorm(hidden, eps=eps)
        self.ffn_in = nn.Linear(hidden, intermediate)
        self.ffn_out = nn.Linear(intermediate, hidden)
        self.ffn_norm = nn.LayerNorm(hidden, eps=eps)
        self.dropout = nn.Dropout(dropout)
        for m in self.modules():  # BERT's initialisation
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=std)
                nn.init.zeros_(m.bias)

    def forward(self, query: torch.Tensor, kv: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """``query``/``kv`` ``(B, L, H)``; ``allowed`` ``(B, L, L)`` bool (row = query position)."""
        b, n, h = query.shape
        d = h // self.heads

        def split(x: torch.Tensor) -> torch.Tensor:
            return x.view(b, n, self.heads, d).transpose(1, 2)

        q, k, v = split(self.query(query)), split(self.key(kv)), split(self.value(kv))
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(d)
        scores = scores.masked_fill(~allowed[:, None], torch.finfo(scores.dtype).min)
        attn = self.dropout(torch.softmax(scores, dim=-1))
        ctx = (attn @ v).transpose(1, 2).reshape(b, n, h)
        x = self.attn_norm(query + self.dropout(self.attn_out(ctx)))
        return self.ffn_norm(x + self.dropout(self.ffn_out(F.gelu(self.ffn_in(x)))))


def mlm_head(lm: nn.Module) -> nn.Module:
    """The MLM head of an ``AutoModelForMaskedLM`` (BERT ``cls``, RoBERTa ``lm_head``, ...): the non-backbone child.

    Raises:
        ValueError: the model has no single head module besides its backbone.
    """
    prefix = getattr(lm, "base_model_prefix", "")
    others = [m for name, m in lm.named_children() if name != prefix]
    if len(others) != 1:
        names = [n for n, _ in lm.named_children()]
        raise ValueError(f"cannot find the MLM head of {type(lm).__name__}: children {names}")
    return others[0]


class RetroMAEModel(nn.Module):
    """Encoder MLM + enhanced decoder; ``forward(**batch)`` returns ``{"loss", "encoder_loss", "decoder_loss"}``."""

    def __init__(self, lm: nn.Module) -> None:
        super().__init__()
        cfg = lm.config
        self.lm = lm
        self.decoder = EnhancedDecoderLayer(
            cfg.hidden_size,
            cfg.num_attention_heads,
            cfg.intermediate_size,
            getattr(cfg, "layer_norm_eps", 1e-12),
            getattr(cfg, "hidden_dropout_prob", 0.1),
            getattr(cfg, "initializer_range", 0.02),
        )

    @property
    def config(self) -> Any:
        return self.lm.config

    @property
    def embeddings(self) -> nn.Module:
        return self.lm.base_model.embeddings  # the generic handle (FlagEmbedding #513: not lm.bert)

    def query_stream(self, cls: torch.Tensor, length: int) -> torch.Tensor:
        """``Embeddings(inputs_embeds = cls broadcast)``: CLS + position + type embeddings, LayerNorm, dropout."""
        return self.embeddings(inputs_embeds=cls[:, None, :].expand(-1, length, -1).contiguous())

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        encoder_input_ids: torch.Tensor,
        encoder_labels: torch.Tensor,
        decoder_attention: torch.Tensor,
        decoder_labels: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """Both MLM losses for a collated batch (``RetroMAECollator``)."""
        out = self.lm(
            input_ids=encoder_input_ids, attention_mask=attention_mask, labels=encoder_labels, output_hidden_states=True
        )
        cls = out.hidden_states[-1][:, 0]
        length = input_ids.shape[1]
        query = self.query_stream(cls, length)
        kv = torch.cat([cls[:, None, :], self.embeddings(input_ids=input_ids)[:, 1:]], dim=1)
        hidden = self.decoder(query, kv, decoder_attention.bool())
        logits = mlm_head(self.lm)(hidden)
        dec_loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), decoder_labels.reshape(-1))
        return {"loss": out.loss + dec_loss, "encoder_loss": out.loss.detach(), "decoder_loss": dec_loss.detach()}

    def save_folder(self, output_dir: str | Path) -> None:
        """``encoder_model/`` (the MLM encoder, ``save_pretrained``) and ``decoder.pt`` (the decoder layer)."""
        from flagembed._io import atomic_write

        folder = Path(output_dir)
        folder.mkdir(parents=True, exist_ok=True)
        self.lm.save_pretrained(str(folder / "encoder_model"), safe_serialization=True)
        with atomic_write(folder / "decoder.pt") as f:
            torch.save({k: v.detach().cpu() for k, v in self.decoder.state_dict().items()}, f)
