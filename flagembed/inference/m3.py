"""M3Embedder: BGE-M3's dense, sparse (lexical) and ColBERT outputs from one forward pass."""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
import torch

from flagembed.engine import run_batches
from flagembed.inference.embedder import Embedder
from flagembed.inference.inputs import apply_instruction, as_text_list
from flagembed.inference.m3_output import M3Output, dicts_to_csr, rows_to_csr
from flagembed.inference.parallel import join_m3, m3_chunk
from flagembed.models import load_m3_heads, maxsim, pad_vectors, special_token_ids
from flagembed.models.heads import sparse_rows

logger = logging.getLogger(__name__)

SCORE_KEYS = ("colbert", "sparse", "dense", "sparse+dense", "colbert+sparse+dense")
_PAIR_CHUNK_ELEMENTS = 1 << 24  # query-token × doc-token products per ColBERT scoring chunk


class M3Embedder(Embedder):
    """BGE-M3: dense vectors, lexical weights and ColBERT vectors, all from one forward pass.

    Takes every :class:`Embedder` argument plus ``colbert_dim`` and the default outputs. The heads
    load from ``sparse_linear.pt`` / ``colbert_linear.pt`` beside the backbone.

    Example:
        >>> m3 = M3Embedder("BAAI/bge-m3")
        >>> out = m3.encode(["hello world"], return_sparse=True, return_colbert_vecs=True)
        >>> out["dense_vecs"].shape, out["lexical_weights"][0], out["colbert_vecs"][0].shape
        >>> batch = m3.encode(texts, return_sparse=True, output="batch")  # CSR + padded ColBERT
    """

    def __init__(
        self,
        model_name_or_path: str | os.PathLike[str],
        *,
        colbert_dim: int = -1,
        return_dense: bool = True,
        return_sparse: bool = False,
        return_colbert_vecs: bool = False,
        **kwargs: Any,
    ) -> None:
        backend = kwargs.get("backend", "torch")
        if backend != "torch":
            raise ValueError(
                f"M3Embedder runs on backend='torch' only, got backend={backend!r}: the ONNX export holds the "
                "backbone without the sparse and ColBERT heads (use Embedder(..., backend='onnx') for dense vectors)"
            )
        super().__init__(model_name_or_path, **kwargs)
        heads = load_m3_heads(self.settings.path, self.encoder.hidden_size, colbert_dim)
        self.encoder.heads = heads.to(self.device, dtype=self.dtype).eval()
        self.unused_ids = special_token_ids(self.tokenizer)
        self.vocab_size = max(int(self.encoder.backbone.config.vocab_size), len(self.tokenizer))
        self.defaults = {"dense": return_dense, "sparse": return_sparse, "colbert": return_colbert_vecs}
        base = self._pool_factory  # several devices: each worker is an M3Embedder with the same heads
        self._pool_factory = functools.partial(M3Embedder, *base.args, colbert_dim=colbert_dim, **base.keywords)

    @property
    def colbert_dim(self) -> int:
        """ColBERT vector size (after ``truncate_dim``)."""
        full = self.encoder.heads.colbert_dim  # type: ignore[union-attr]
        return min(full, self.settings.truncate_dim) if self.settings.truncate_dim else full

    # ------------------------------------------------------------------ encoding
    def encode(  # type: ignore[override]
        self,
        texts: str | Sequence[str],
        *,
        return_dense: bool | None = None,
        return_sparse: bool | None = None,
        return_colbert_vecs: bool | None = None,
        batch_size: int | None = None,
        max_length: int | None = None,
        instruction: str | None = None,
        instruction_format: str | None = None,
        output: Literal["dict", "batch"] = "dict",
        show_progress: bool | None = None,
    ) -> dict[str, Any] | M3Output:
        """Encode texts; ``output="dict"`` gives the reference's dict, ``"batch"`` an :class:`M3Output`.

        The dict is ``{"dense_vecs": (N, D), "lexical_weights": [{str(id): w}], "colbert_vecs": [(Li, Dc)]}``
        with ``None`` for outputs not asked for; a single string gives one item per key.

        Raises:
            TypeError: an item is not a string.
            ValueError: unknown ``output``.
        """
        if output not in ("dict", "batch"):
            raise ValueError(f"unknown output {output!r}; valid: dict, batch")
        items, single = as_text_list(texts)
        items = apply_instruction(items, instruction, instruction_format or "{}{}")
        result = self.encode_multi(
            items,
            dense=self.defaults["dense"] if return_dense is None else return_dense,
            sparse=self.defaults["sparse"] if return_sparse is None else return_sparse,
            colbert=self.defaults["colbert"] if return_colbert_vecs is None else return_colbert_vecs,
            batch_size=batch_size,
            max_length=self._cap_length(max_length) if max_length is not None else self.passage_max_length,
            show_progress=show_progress,
        )
        return result if output == "batch" else result.to_reference(single)

    def encode_multi(
        self,
        texts: list[str],
        *,
        dense: bool = True,
        sparse: bool = False,
        colbert: bool = False,
        max_length: int | None = None,
        batch_size: int | None = None,
        show_progress: bool | None = None,
    ) -> M3Output:
        """Texts as they are (no instruction) → :class:`M3Output`, through the batching engine."""
        n = len(texts)
        out = M3Output(
            dense=np.zeros((0, self.dim), np.float32) if dense else None,
            sparse=sp.csr_matrix((0, self.vocab_size), dtype=np.float32) if sparse else None,
            colbert=[] if colbert else None,
        )
        if n == 0:
            self.last_truncated = 0
            return out
        if len(self.devices) > 1 and n > 1:  # one contiguous chunk per device worker, joined in input order
            kw = {"dense": dense, "sparse": sparse, "colbert": colbert, "max_length": max_length}
            parts = self._map_workers(m3_chunk, texts, batch_size=batch_size, show_progress=False, **kw)
            self.last_truncated = sum(t for _, t in parts)
            return join_m3([p for p, _ in parts])
        tok = self.tokenize(texts, max_length or self.passage_max_length)
        config = self.engine_config
        if batch_size is not None:
            config.batch_size = batch_size

        def step(batch: Any) -> list[tuple[Any, Any, Any]]:
            res = self.encoder.forward_multi(
                batch.input_ids, batch.attention_mask, dense=dense, sparse=sparse, colbert=colbert
            )
            d = res.dense.cpu().numpy() if res.dense is not None else [None] * len(batch)
            s = (
                sparse_rows(res.token_weights, batch.input_ids, batch.attention_mask, self.unused_ids)
                if res.token_weights is not None
                else [None] * len(batch)
            )
            if res.colbert is not None:
                vecs, lens = res.colbert.cpu().numpy(), res.colbert_lengths.cpu().numpy()  # type: ignore[union-attr]
                c = [vecs[i, : lens[i]] for i in range(len(batch))]
            else:
                c = [None] * len(batch)
            return list(zip(d, s, c))

        with torch.inference_mode():
            items = run_batches(
                tok.ids,
                step,
                config,
                show_progress=self.show_progress if show_progress is None else show_progress,
                desc="Encoding (M3)",
            )
        if dense:
            out.dense = np.stack([it[0] for it in items]).astype(np.float32, copy=False)
        if sparse:
            out.sparse = rows_to_csr([it[1] for it in items], self.vocab_size)
        if colbert:
            out.colbert = [np.ascontiguousarray(it[2], dtype=np.float32) for it in items]
        return out

    # ------------------------------------------------------------------ reference helpers
    def convert_id_to_token(self, lexical_weights: dict | list[dict]) -> dict | list[dict]:
        """Re-key lexical weights by token text (``tokenizer.decode([id])``); a dict in gives a dict out."""
        single = isinstance(lexical_weights, dict)
        rows = [lexical_weights] if single else list(lexical_weights)
        out = [{self.tokenizer.decode([int(k)]): v for k, v in row.items()} for row in rows]
        return out[0] if single else out

    def compute_lexical_matching_score(self, lexical_weights_1: Any, lexical_weights_2: Any) -> float | np.ndarray:
        """Sum of ``w1 * w2`` over shared tokens: dict × dict → float; lists or CSR → ``(len1, len2)`` array."""
        if isinstance(lexical_weights_1, dict) and isinstance(lexical_weights_2, dict):
            return float(
                sum(
                    float(w) * float(lexical_weights_2[t])
                    for t, w in lexical_weights_1.items()
                    if t in lexical_weights_2
                )
            )
        a = (
            lexical_weights_1
            if sp.issparse(lexical_weights_1)
            else dicts_to_csr(list(lexical_weights_1), self.vocab_size)
        )
        b = (
            lexical_weights_2
            if sp.issparse(lexical_weights_2)
            else dicts_to_csr(list(lexical_weights_2), self.vocab_size)
        )
        return np.asarray((sp.csr_matrix(a) @ sp.csr_matrix(b).T).todense(), dtype=np.float32)

    def colbert_score(self, q_reps: np.ndarray | torch.Tensor, p_reps: np.ndarray | torch.Tensor) -> np.float32:
        """Late-interaction score: ``sum_i max_j q_i·p_j / len(q)`` (one query, one passage)."""
        q = torch.as_tensor(np.asarray(q_reps, dtype=np.float32))
        p = torch.as_tensor(np.asarray(p_reps, dtype=np.float32))
        score = maxsim(q[None], torch.tensor([len(q)]), p[None], torch.tensor([len(p)]), pairwise=True)
        return np.float32(score.item())

    def compute_score(
        self,
        sentence_pairs: Sequence[Sequence[str]] | Sequence[str],
        batch_size: int | None = None,
        max_query_length: int | None = None,
        max_passage_length: int | None = None,
        weights_for_different_modes: Sequence[float] | None = None,
    ) -> dict[str, list[float] | float]:
        """The reference's five scores per ``(query, passage)`` pair, encoding each distinct text once.

        ``sparse+dense = (w1*s + w0*d)/(w1+w0)`` and
        ``colbert+sparse+dense = (w2*c + w1*s + w0*d)/(w0+w1+w2)``, weights ``[dense, sparse, colbert]``
        (default ``[1, 1, 1]``). A single pair gives floats instead of lists.

        Raises:
            TypeError: a pair is not two strings (names its index).
            ValueError: ``weights_for_different_modes`` is not three numbers with a positive sum.
        """
        weights = check_mode_weights(weights_for_different_modes)
        pairs, single = _as_pairs(sentence_pairs)
        if not pairs:
            return {k: [] for k in SCORE_KEYS}
        q_texts, q_idx = np.unique([p[0] for p in pairs], return_inverse=True)
        p_texts, p_idx = np.unique([p[1] for p in pairs], return_inverse=True)
        kw = {"dense": True, "sparse": True, "colbert": True, "batch_size": batch_size}
        qo = self.encode_multi(
            list(q_texts), max_length=self._cap_length(max_query_length or self.query_max_length), **kw
        )
        po = self.encode_multi(
            list(p_texts), max_length=self._cap_length(max_passage_length or self.passage_max_length), **kw
        )
        dense = np.einsum("ij,ij->i", qo.dense[q_idx], po.dense[p_idx])  # type: ignore[index]
        sparse = np.asarray(qo.sparse[q_idx].multiply(po.sparse[p_idx]).sum(axis=1)).ravel()  # type: ignore[index]
        colbert = pair_colbert_scores(qo.colbert, po.colbert, q_idx, p_idx)  # type: ignore[arg-type]
        scores = mix_scores(dense, sparse, colbert, weights)
        if single:
            return {k: float(v[0]) for k, v in scores.items()}
        return {k: [float(x) for x in v] for k, v in scores.items()}


def check_mode_weights(weights: Sequence[float] | None) -> tuple[float, float, float]:
    """``[dense, sparse, colbert]`` weights (default ``[1, 1, 1]``).

    Raises:
        ValueError: not exactly three finite numbers, or a zero sum.
    """
    if weights is None:
        return (1.0, 1.0, 1.0)
    values = list(weights)
    if len(values) != 3:
        raise ValueError(f"weights_for_different_modes needs 3 numbers [dense, sparse, colbert], got {len(values)}")
    try:
        w = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise ValueError(f"weights_for_different_modes must be numbers, got {values!r}") from None
    if not all(np.isfinite(w)) or w[0] + w[1] == 0 or sum(w) == 0:
        raise ValueError(f"weights_for_different_modes must be finite with non-zero sums, got {values!r}")
    return w  # type: ignore[return-value]


def mix_scores(
    dense: np.ndarray, sparse: np.ndarray, colbert: np.ndarray, weights: tuple[float, float, float]
) -> dict[str, np.ndarray]:
    """The reference's five score lists from the three per-mode scores."""
    w0, w1, w2 = weights
    return {
        "colbert": colbert,
        "sparse": sparse,
        "dense": dense,
        "sparse+dense": (w1 * sparse + w0 * dense) / (w1 + w0),
        "colbert+sparse+dense": (w2 * colbert + w1 * sparse + w0 * dense) / (w0 + w1 + w2),
    }


def pair_colbert_scores(
    q_vecs: list[np.ndarray], p_vecs: list[np.ndarray], q_idx: np.ndarray, p_idx: np.ndarray
) -> np.ndarray:
    """MaxSim of ``q_vecs[q_idx[i]]`` with ``p_vecs[p_idx[i]]`` for every pair, in bounded-memory chunks."""
    dim = q_vecs[0].shape[1]
    q_pad, q_len = pad_vectors(q_vecs, dim)
    p_pad, p_len = pad_vectors(p_vecs, dim)
    per_pair = max(1, q_pad.shape[1] * p_pad.shape[1])
    chunk = max(1, _PAIR_CHUNK_ELEMENTS // per_pair)
    out = np.empty(len(q_idx), dtype=np.float32)
    qt, pt = torch.from_numpy(q_pad), torch.from_numpy(p_pad)
    ql, pl = torch.from_numpy(q_len), torch.from_numpy(p_len)
    for start in range(0, len(q_idx), chunk):
        qi = torch.from_numpy(q_idx[start : start + chunk])
        pi = torch.from_numpy(p_idx[start : start + chunk])
        out[start : start + chunk] = maxsim(qt[qi], ql[qi], pt[pi], pl[pi], pairwise=True).numpy()
    return out


def _as_pairs(sentence_pairs: Any) -> tuple[list[tuple[str, str]], bool]:
    if isinstance(sentence_pairs, (str, bytes)) or not isinstance(sentence_pairs, Sequence):
        raise TypeError(
            f"sentence_pairs must be a (query, passage) pair or a list of them, got {type(sentence_pairs).__name__}"
        )
    single = len(sentence_pairs) == 2 and all(isinstance(x, str) for x in sentence_pairs)
    rows = [sentence_pairs] if single else list(sentence_pairs)
    out = []
    for i, pair in enumerate(rows):
        if isinstance(pair, str) or not isinstance(pair, Sequence) or len(pair) != 2:
            raise TypeError(f"sentence_pairs[{i}] must be a (query, passage) pair of strings, got {pair!r:.80}")
        if not all(isinstance(x, str) for x in pair):
            raise TypeError(f"sentence_pairs[{i}] must hold two strings, got {pair!r:.80}")
        out.append((pair[0], pair[1]))
    return out, single
