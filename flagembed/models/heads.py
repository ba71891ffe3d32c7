"""BGE-M3 heads (sparse lexical weights, ColBERT multi-vectors) and their scoring math.

Functions of ``(hidden, mask, input_ids)``; the only place this math lives (REFERENCE.md §2.2).
Training, inference, the index and the server all call these.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)

SPARSE_FILE = "sparse_linear.pt"
COLBERT_FILE = "colbert_linear.pt"


class M3Heads(nn.Module):
    """``sparse_linear`` (hidden → 1) and ``colbert_linear`` (hidden → colbert_dim) of BGE-M3."""

    def __init__(self, hidden_size: int, colbert_dim: int = -1) -> None:
        super().__init__()
        out = hidden_size if colbert_dim is None or colbert_dim <= 0 else colbert_dim
        self.sparse_linear = nn.Linear(hidden_size, 1)
        self.colbert_linear = nn.Linear(hidden_size, out)

    @property
    def colbert_dim(self) -> int:
        return int(self.colbert_linear.out_features)

    def save(self, directory: str | Path) -> None:
        """Write ``sparse_linear.pt`` and ``colbert_linear.pt`` (state dicts, as the reference saves them)."""
        from flagembed._io import atomic_write

        for name, module in ((SPARSE_FILE, self.sparse_linear), (COLBERT_FILE, self.colbert_linear)):
            with atomic_write(Path(directory) / name) as f:
                torch.save({k: v.detach().cpu() for k, v in module.state_dict().items()}, f)


def load_m3_heads(path: str | Path, hidden_size: int, colbert_dim: int = -1, for_training: bool = False) -> M3Heads:
    """Load the heads saved next to a BGE-M3 backbone.

    Args:
        path: the checkpoint folder holding ``sparse_linear.pt`` and ``colbert_linear.pt``.
        hidden_size: the backbone's hidden size.
        colbert_dim: ColBERT output size (``<= 0``: the hidden size, or whatever the file holds).
        for_training: a missing file gets a random initialisation (with a warning) instead of an error.

    Raises:
        FileNotFoundError: a head file is missing and ``for_training`` is False.
        ValueError: a head file's shapes do not fit ``hidden_size`` / ``colbert_dim``.
    """
    folder = Path(path)
    states: dict[str, dict[str, torch.Tensor] | None] = {}
    for name in (SPARSE_FILE, COLBERT_FILE):
        file = folder / name
        if file.is_file():
            states[name] = torch.load(file, map_location="cpu", weights_only=True)
        elif for_training:
            logger.warning("%s not found in %s: initialising that head randomly (training only)", name, folder)
            states[name] = None
        else:
            raise FileNotFoundError(
                f"{file} is missing: a BGE-M3 checkpoint needs {SPARSE_FILE} and {COLBERT_FILE} next to the "
                "backbone (pass for_training=True to start the heads from random weights)"
            )
    colbert_state = states[COLBERT_FILE]
    if colbert_state is not None and (colbert_dim is None or colbert_dim <= 0):
        colbert_dim = int(colbert_state["weight"].shape[0])
    heads = M3Heads(hidden_size, colbert_dim)
    for name, module in ((SPARSE_FILE, heads.sparse_linear), (COLBERT_FILE, heads.colbert_linear)):
        state = states[name]
        if state is None:
            continue
        try:
            module.load_state_dict(state)
        except RuntimeError as exc:  # shape mismatch from load_state_dict: report it as bad input
            raise ValueError(f"{folder / name} does not fit hidden size {hidden_size}: {exc}") from exc
    return heads


# ---------------------------------------------------------------------------- sparse
def special_token_ids(tokenizer: object) -> list[int]:
    """Ids whose lexical weight is always dropped: cls, eos, pad, unk (as the reference)."""
    out = []
    for attr in ("cls_token_id", "eos_token_id", "pad_token_id", "unk_token_id"):
        value = getattr(tokenizer, attr, None)
        if isinstance(value, int) and value not in out:
            out.append(value)
    return out


def token_weights(hidden: torch.Tensor, sparse_linear: nn.Module) -> torch.Tensor:
    """``relu(sparse_linear(hidden))`` per token: (B, L) float32."""
    return torch.relu(sparse_linear(hidden)).squeeze(-1).float()


def sparse_rows(
    weights: torch.Tensor, input_ids: torch.Tensor, mask: torch.Tensor, unused_ids: Iterable[int]
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per text ``(token_ids, weights)``: max weight per distinct id, unused ids and ``w <= 0`` dropped.

    Vectorized over the batch (no Python loop over tokens); ids come back sorted.
    """
    bsz, length = input_ids.shape
    keep = (weights > 0) & mask.bool()
    unused = torch.tensor(sorted(set(unused_ids)), dtype=input_ids.dtype, device=input_ids.device)
    if unused.numel():
        keep &= ~torch.isin(input_ids, unused)
    rows = torch.arange(bsz, device=input_ids.device).unsqueeze(1).expand(bsz, length)[keep]
    ids = input_ids[keep].long()
    w = weights[keep]
    width = int(input_ids.max().item()) + 1 if input_ids.numel() else 1
    uniq, inverse = torch.unique(rows.long() * width + ids, return_inverse=True)
    best = torch.zeros(len(uniq), dtype=w.dtype, device=w.device).scatter_reduce(0, inverse, w, reduce="amax")
    u_rows = (uniq // width).cpu().numpy()
    u_ids = (uniq % width).cpu().numpy().astype(np.int64)
    best_np = best.cpu().numpy().astype(np.float32)
    bounds = np.searchsorted(u_rows, np.arange(bsz + 1))
    return [(u_ids[bounds[i] : bounds[i + 1]], best_np[bounds[i] : bounds[i + 1]]) for i in range(bsz)]


def sparse_vocab(
    weights: torch.Tensor, input_ids: torch.Tensor, vocab_size: int, unused_ids: Iterable[int]
) -> torch.Tensor:
    """Full-vocabulary sparse vectors (B, V): ``amax`` scatter of token weights, unused columns zeroed."""
    out = torch.zeros(input_ids.shape[0], vocab_size, dtype=weights.dtype, device=weights.device)
    out = out.scatter_reduce(-1, input_ids.long(), weights, reduce="amax")
    unused = list(set(unused_ids))
    if unused:
        out[:, unused] = 0
    return out


# ---------------------------------------------------------------------------- ColBERT
def colbert_vectors(
    hidden: torch.Tensor,
    mask: torch.Tensor,
    colbert_linear: nn.Module,
    *,
    normalize: bool = True,
    truncate_dim: int | None = None,
) -> torch.Tensor:
    """ColBERT vectors (B, L-1, D): CLS skipped, padding zeroed, optional truncate, then L2 norm."""
    vecs = colbert_linear(hidden[:, 1:]).float()
    vecs = vecs * mask[:, 1:].unsqueeze(-1).to(vecs.dtype)
    if truncate_dim is not None:
        vecs = vecs[..., :truncate_dim]
    if normalize:
        vecs = F.normalize(vecs, dim=-1)
    return vecs


def colbert_lengths(mask: torch.Tensor) -> torch.Tensor:
    """Vectors kept per text: ``mask.sum() - 1`` (CLS dropped, final ``</s>`` kept)."""
    return mask.sum(dim=1).long() - 1


def maxsim(
    q: torch.Tensor, q_len: torch.Tensor, d: torch.Tensor, d_len: torch.Tensor, *, pairwise: bool = False
) -> torch.Tensor:
    """ColBERT late-interaction scores from padded vectors.

    ``sum_i max_j q_i · d_j / n_q`` over the real vectors of each side (REFERENCE.md §2.2).

    Args:
        q: (Q, Lq, D) query vectors; q_len: (Q,) real lengths.
        d: (N, Ld, D) document vectors; d_len: (N,) real lengths.
        pairwise: score ``q[i]`` with ``d[i]`` only (Q == N) instead of every query with every document.

    Returns:
        (Q,) when ``pairwise`` else (Q, N) float32.
    """
    q = q.float()
    d = d.float()
    d_valid = torch.arange(d.shape[1], device=d.device)[None, :] < d_len[:, None]
    q_valid = (torch.arange(q.shape[1], device=q.device)[None, :] < q_len[:, None]).float()
    neg = torch.finfo(torch.float32).min
    if pairwise:
        sim = torch.bmm(q, d.transpose(1, 2))  # (B, Lq, Ld)
        sim = sim.masked_fill(~d_valid[:, None, :], neg)
        best = sim.max(dim=2).values * q_valid
        best = torch.where(d_len[:, None] > 0, best, torch.zeros_like(best))
        return best.sum(dim=1) / q_len.clamp_min(1).float()
    # every query token against every document token as one matrix product; an extra coordinate
    # (1 on real query tokens, -1e9 on padded document tokens) removes padding from the max without
    # a masking pass, and padded query tokens (all zeros) add nothing to the sum
    big = torch.tensor(-1e9, dtype=q.dtype, device=q.device)
    q_ext = torch.cat([q * q_valid[..., None], q_valid[..., None]], dim=-1)
    d_ext = torch.cat([d, torch.where(d_valid, torch.zeros((), device=d.device), big)[..., None]], dim=-1)
    n_q, len_q, width = q_ext.shape
    n_d, len_d, _ = d_ext.shape
    sim = q_ext.reshape(n_q * len_q, width) @ d_ext.reshape(n_d * len_d, width).T
    best = sim.view(n_q, len_q, n_d, len_d).amax(dim=3).sum(dim=1)  # (Q, N)
    best = torch.where(d_len[None, :] > 0, best, torch.zeros_like(best))
    return best / q_len.clamp_min(1).float()[:, None]


def pad_vectors(vectors: list[np.ndarray], dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Stack variable-length ``(Li, dim)`` arrays into ``(N, max L, dim)`` zeros-padded plus lengths."""
    lengths = np.fromiter((len(v) for v in vectors), dtype=np.int64, count=len(vectors))
    out = np.zeros((len(vectors), int(lengths.max(initial=0)), dim), dtype=np.float32)
    for i, v in enumerate(vectors):
        out[i, : len(v)] = v
    return out, lengths
