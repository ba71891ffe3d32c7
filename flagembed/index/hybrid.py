"""HybridSearcher: an embedder plus dense / sparse / ColBERT indexes, fused by weights or reciprocal rank."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np

from flagembed.index.dense import DenseIndex
from flagembed.index.multivector import MultiVectorIndex
from flagembed.index.results import SearchResults, check_top_k, gather_results, top_k_rows
from flagembed.index.sparse import SparseIndex
from flagembed.index.storage import check_model, read_manifest, write_index_dir
from flagembed.inference import Embedder, M3Embedder, M3Output
from flagembed.inference.inputs import as_corpus_list, as_text_list

logger = logging.getLogger(__name__)

Mode = Literal["dense", "sparse", "colbert"]
MODES: tuple[str, ...] = get_args(Mode)
Fusion = Literal["weighted", "rrf"]
DEFAULT_WEIGHTS = {"dense": 0.4, "sparse": 0.2, "colbert": 0.4}  # BGE-M3 README's suggestion


def check_modes(modes: str | Sequence[str] | None, available: Sequence[str] = MODES) -> list[str]:
    """Validate mode names (a list or a comma-separated string).

    Raises:
        ValueError: an unknown mode, a mode this searcher lacks, a repeat, or none at all.
    """
    if modes is None:
        return list(available)
    items = [m.strip() for m in modes.split(",")] if isinstance(modes, str) else list(modes)
    if not items or any(not m for m in items):
        raise ValueError(f"modes must name at least one of {', '.join(MODES)}, got {modes!r}")
    for i, m in enumerate(items):
        if m not in MODES:
            raise ValueError(f"modes[{i}] = {m!r} is not a mode; valid: {', '.join(MODES)}")
        if m not in available:
            raise ValueError(f"modes[{i}] = {m!r}: this index was built with modes {', '.join(available)} only")
    if len(set(items)) != len(items):
        raise ValueError(f"modes repeat a name: {items!r}")
    return items


def check_weights(
    weights: Mapping[str, float] | Sequence[float] | str | None, modes: Sequence[str]
) -> dict[str, float]:
    """Per-mode weights: a mapping, a list aligned with ``modes`` (or a comma-separated string).

    Raises:
        ValueError: wrong length, unknown keys, negative or non-finite values, or a zero sum.
    """
    if weights is None:
        out = {m: DEFAULT_WEIGHTS[m] for m in modes}
    elif isinstance(weights, Mapping):
        extra = set(weights) - set(modes)
        if extra:
            raise ValueError(f"weights name modes not searched: {sorted(extra)}; searching {', '.join(modes)}")
        out = {m: float(weights.get(m, 0.0)) for m in modes}
    else:
        values = [v.strip() for v in weights.split(",")] if isinstance(weights, str) else list(weights)
        if len(values) != len(modes):
            raise ValueError(f"got {len(values)} weights for {len(modes)} modes ({', '.join(modes)})")
        try:
            out = {m: float(v) for m, v in zip(modes, values)}
        except (TypeError, ValueError):
            raise ValueError(f"weights must be numbers, got {values!r}") from None
    bad = [m for m, w in out.items() if not np.isfinite(w) or w < 0]
    if bad or sum(out.values()) <= 0:
        raise ValueError(f"weights must be finite, >= 0 and sum to > 0, got {out}")
    return out


def model_info(embedder: Embedder) -> dict[str, Any]:
    """The settings that decide an embedder's vectors: recorded in index manifests and hashed."""
    s = embedder.settings
    info: dict[str, Any] = {
        "name": s.name,
        "revision": s.revision,
        "class": "m3" if isinstance(embedder, M3Embedder) else "dense",
        "pooling": s.pooling,
        "normalize": s.normalize,
        "truncate_dim": s.truncate_dim,
        "query_instruction": s.query_instruction,
        "query_instruction_format": s.query_instruction_format,
        "passage_instruction": s.passage_instruction,
        "passage_instruction_format": s.passage_instruction_format,
        "dim": embedder.dim,
    }
    if isinstance(embedder, M3Embedder):
        info.update(colbert_dim=embedder.colbert_dim, vocab_size=embedder.vocab_size)
    return info


class HybridSearcher:
    """Search a corpus with any of dense, sparse and ColBERT retrieval, alone or fused.

    Weighted fusion ranks by ``sum_m w_m * score_m / sum_m w_m`` (the reference's
    ``colbert+sparse+dense`` mix; defaults dense 0.4, sparse 0.2, colbert 0.4): each mode proposes
    ``candidates`` documents, and every proposed document is rescored exactly in every mode, so the
    result equals brute force whenever the corpus has at most ``candidates`` documents.
    ``fusion="rrf"`` ranks by ``sum_m w_m / (rrf_k + rank_m)`` instead.

    Example:
        >>> searcher = HybridSearcher.build(M3Embedder("BAAI/bge-m3"), corpus, ids)
        >>> searcher.search("what is bge-m3?", top_k=5).ids
        >>> searcher.save("my-index"); HybridSearcher.load("my-index")
    """

    def __init__(
        self,
        embedder: Embedder | None = None,
        *,
        dense: DenseIndex | None = None,
        sparse: SparseIndex | None = None,
        colbert: MultiVectorIndex | None = None,
        weights: Mapping[str, float] | None = None,
        fusion: Fusion = "weighted",
        rrf_k: int = 60,
        candidates: int = 100,
    ) -> None:
        self.embedder = embedder
        self.indexes: dict[str, Any] = {
            m: ix for m, ix in (("dense", dense), ("sparse", sparse), ("colbert", colbert)) if ix is not None
        }
        if not self.indexes:
            raise ValueError("a HybridSearcher needs at least one of dense, sparse, colbert")
        self.weights = dict(weights) if weights is not None else dict(DEFAULT_WEIGHTS)
        self.fusion = _check_fusion(fusion)
        self.rrf_k = rrf_k
        self.candidates = candidates

    @property
    def modes(self) -> list[str]:
        return list(self.indexes)

    def __len__(self) -> int:
        return len(next(iter(self.indexes.values())))

    # ------------------------------------------------------------------ building
    @classmethod
    def build(
        cls,
        embedder: Embedder,
        corpus: Any,
        ids: Sequence[str] | None = None,
        *,
        modes: str | Sequence[str] | None = None,
        dense_kind: str = "flat",
        show_progress: bool | None = None,
        **kwargs: Any,
    ) -> HybridSearcher:
        """Encode ``corpus`` (strings or title/text dicts) once and index it in every mode.

        Raises:
            ValueError: sparse/ColBERT modes with a non-M3 embedder, bad modes or ids.
        """
        available = MODES if isinstance(embedder, M3Embedder) else ("dense",)
        chosen = check_modes(modes, available)
        info = model_info(embedder)
        searcher = cls(
            embedder,
            dense=DenseIndex(embedder.dim, kind=dense_kind) if "dense" in chosen else None,  # type: ignore[arg-type]
            sparse=SparseIndex(getattr(embedder, "vocab_size", None)) if "sparse" in chosen else None,
            colbert=MultiVectorIndex(embedder.colbert_dim) if "colbert" in chosen else None,  # type: ignore[attr-defined]
            **kwargs,
        )
        for ix in searcher.indexes.values():
            ix.model_info = info
        searcher.add(ids if ids is not None else [str(i) for i in range(len(corpus))], corpus, show_progress)
        return searcher

    def add(self, ids: Sequence[str], corpus: Any, show_progress: bool | None = None) -> None:
        """Encode documents with the embedder and add them to every index."""
        texts, single = as_corpus_list(corpus)
        if single:
            raise TypeError("add() takes a list of documents, got a single one")
        enc = self._encode(texts, self.modes, query=False, show_progress=show_progress)
        first = next(iter(self.indexes.values()))
        first._ids.check_new(ids, len(texts))  # validate once before touching any index
        self._add_encoded(list(ids), enc)

    def _add_encoded(self, ids: list[str], enc: M3Output) -> None:
        for mode, ix in self.indexes.items():
            if mode == "dense":
                ix.add(ids, enc.dense)
            elif mode == "sparse":
                ix.add(ids, enc.sparse)
            else:
                ix.add(ids, enc.colbert)

    def remove(self, ids: Sequence[str]) -> int:
        """Remove documents from every index; returns how many were removed."""
        counts = [ix.remove(ids) for ix in self.indexes.values()]
        return counts[0]

    # ------------------------------------------------------------------ searching
    def _encode(self, texts: list[str], modes: Sequence[str], *, query: bool, show_progress: bool | None) -> M3Output:
        if self.embedder is None:
            raise ValueError("this searcher has no embedder: use search_encoded() with encoded queries")
        fn = self.embedder.encode_queries if query else self.embedder.encode_corpus
        if isinstance(self.embedder, M3Embedder):
            want = {"return_dense": "dense" in modes, "return_sparse": "sparse" in modes}
            return fn(
                texts, output="batch", return_colbert_vecs="colbert" in modes, show_progress=show_progress, **want
            )
        return M3Output(dense=fn(texts, show_progress=show_progress))

    def check_queries(self, queries: str | Sequence[str]) -> list[str]:
        """Validate query texts: non-empty, and with at least one non-special token.

        Raises:
            ValueError: an empty query or one made only of special tokens (names its index).
        """
        items, _ = as_text_list(queries, "queries")
        tok = getattr(self.embedder, "tokenizer", None)
        special = set(getattr(tok, "all_special_ids", []) or [])
        for i, q in enumerate(items):
            if not q.strip():
                raise ValueError(f"queries[{i}] is empty")
            if tok is not None and all(t in special for t in tok(q, add_special_tokens=False)["input_ids"]):
                raise ValueError(f"queries[{i}] = {q!r:.80} has only special or unknown tokens; nothing to search")
        return items

    def search(
        self,
        queries: str | Sequence[str],
        top_k: int = 10,
        *,
        modes: str | Sequence[str] | None = None,
        weights: Mapping[str, float] | Sequence[float] | str | None = None,
        fusion: Fusion | None = None,
        candidates: int | None = None,
    ) -> SearchResults:
        """Encode query texts (one forward pass for all modes) and search; see :meth:`search_encoded`."""
        chosen = check_modes(modes, self.modes)
        check_top_k(top_k)
        w = self._weights(weights, chosen)
        items = self.check_queries(queries)
        enc = self._encode(items, chosen, query=True, show_progress=False)
        return self.search_encoded(enc, top_k, modes=chosen, weights=w, fusion=fusion, candidates=candidates)

    def _weights(self, weights: Any, modes: list[str]) -> dict[str, float]:
        if weights is None:
            return check_weights({m: self.weights.get(m, DEFAULT_WEIGHTS[m]) for m in modes}, modes)
        return check_weights(weights, modes)

    def search_encoded(
        self,
        queries: M3Output,
        top_k: int = 10,
        *,
        modes: str | Sequence[str] | None = None,
        weights: Mapping[str, float] | Sequence[float] | str | None = None,
        fusion: Fusion | None = None,
        candidates: int | None = None,
    ) -> SearchResults:
        """Search with already-encoded queries (an :class:`M3Output` holding the needed outputs)."""
        chosen = check_modes(modes, self.modes)
        top_k = check_top_k(top_k)
        w = self._weights(weights, chosen)
        fusion = _check_fusion(fusion or self.fusion)
        n = len(queries)
        if len(self) == 0 or n == 0:
            return SearchResults.empty(n)
        reps = {"dense": queries.dense, "sparse": queries.sparse, "colbert": queries.colbert}
        for m in chosen:
            if reps[m] is None:
                raise ValueError(f"queries were not encoded for mode {m!r}")
        pool = max(top_k, candidates or self.candidates)
        per_mode = {m: self.indexes[m].search(reps[m], pool) for m in chosen}
        if len(chosen) == 1:
            only = per_mode[chosen[0]]
            return SearchResults([r[:top_k] for r in only.ids], [s[:top_k] for s in only.scores])
        if fusion == "rrf":
            return self._rrf(per_mode, w, top_k, n)
        out = SearchResults()
        total = sum(w.values())
        for qi in range(n):
            union = list(dict.fromkeys(d for m in chosen for d in per_mode[m].ids[qi]))
            fused = np.zeros(len(union), dtype=np.float64)
            for m in chosen:
                fused += w[m] * self._exact(m, reps[m], qi, union)
            idx, vals = top_k_rows((fused / total)[None, :], top_k)
            res = gather_results(idx, vals, union)
            out.ids += res.ids
            out.scores += res.scores
        return out

    def _exact(self, mode: str, rep: Any, qi: int, ids: list[str]) -> np.ndarray:
        ix = self.indexes[mode]
        if mode == "dense":
            return ix.vectors(ids) @ np.asarray(rep[qi], dtype=np.float32)
        if mode == "sparse":
            return ix.scores(rep[qi], ids)[0]
        return ix.scores([rep[qi]], ids)[0]

    def _rrf(self, per_mode: dict[str, SearchResults], w: dict[str, float], top_k: int, n: int) -> SearchResults:
        out = SearchResults()
        for qi in range(n):
            fused: dict[str, float] = {}
            for m, res in per_mode.items():
                for rank, doc in enumerate(res.ids[qi], 1):
                    fused[doc] = fused.get(doc, 0.0) + w[m] / (self.rrf_k + rank)
            docs = list(fused)
            idx, vals = top_k_rows(np.array([[fused[d] for d in docs]]), top_k)
            res = gather_results(idx, vals, docs)
            out.ids += res.ids
            out.scores += res.scores
        return out

    # ------------------------------------------------------------------ persistence
    def save(self, directory: str | os.PathLike[str]) -> None:
        """Write every index plus a manifest (model settings and their hash) atomically."""
        info = model_info(self.embedder) if self.embedder is not None else None
        params = {
            "modes": self.modes,
            "weights": self.weights,
            "fusion": self.fusion,
            "rrf_k": self.rrf_k,
            "candidates": self.candidates,
            "model_path": self.embedder.settings.path if self.embedder is not None else None,
            "count": len(self),
        }

        def write(tmp: Path) -> None:
            for mode, ix in self.indexes.items():
                ix.model_info = info
                ix.save(tmp / mode)

        write_index_dir(directory, "hybrid", params, write, info)

    @classmethod
    def load(
        cls, directory: str | os.PathLike[str], embedder: Embedder | None = None, **embedder_kwargs: Any
    ) -> HybridSearcher:
        """Open a saved searcher; without ``embedder`` the recorded model is loaded with its settings.

        Raises:
            IndexFormatError: missing or corrupted files.
            IndexMismatchError: ``embedder`` differs from the model the index was built with.
        """
        path = Path(directory)
        manifest = read_manifest(path, "hybrid")
        params, info = manifest["params"], manifest.get("model")
        if embedder is None and info is not None:
            embedder = _embedder_from_info(info, params.get("model_path"), **embedder_kwargs)
        if embedder is not None and info is not None:
            check_model(manifest, model_info(embedder), path)
        loaders = {"dense": DenseIndex.load, "sparse": SparseIndex.load, "colbert": MultiVectorIndex.load}
        subs = {m: loaders[m](path / m, model_info=info) for m in params["modes"]}
        return cls(
            embedder,
            **subs,
            weights=params.get("weights"),
            fusion=params.get("fusion", "weighted"),
            rrf_k=int(params.get("rrf_k", 60)),
            candidates=int(params.get("candidates", 100)),
        )


def _embedder_from_info(info: Mapping[str, Any], path: str | None, **kwargs: Any) -> Embedder:
    """Rebuild the embedder an index was built with from its manifest."""
    source = path if path and Path(path).is_dir() else info["name"]
    args = {
        "pooling": info.get("pooling"),
        "normalize": info.get("normalize"),
        "truncate_dim": info.get("truncate_dim"),
        "query_instruction": info.get("query_instruction"),
        "query_instruction_format": info.get("query_instruction_format"),
        "passage_instruction": info.get("passage_instruction"),
        "passage_instruction_format": info.get("passage_instruction_format"),
        "revision": info.get("revision"),
        **kwargs,
    }
    embedder_cls = M3Embedder if info.get("class") == "m3" else Embedder
    return embedder_cls(source, **args)


def _check_fusion(fusion: str) -> Fusion:
    if fusion not in get_args(Fusion):
        raise ValueError(f"unknown fusion {fusion!r}; valid: {', '.join(get_args(Fusion))}")
    return fusion  # type: ignore[return-value]
