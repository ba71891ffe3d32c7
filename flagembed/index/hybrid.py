"""HybridSearcher: an embedder plus dense / sparse / ColBERT indexes, fused by weights or reciprocal rank."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from flagembed.index.bm25 import BM25Index
from flagembed.index.bm25_fusion import normalized_bm25
from flagembed.index.dense import DenseIndex
from flagembed.index.docs import DOCS_FILE, DocStore
from flagembed.index.identity import model_info, model_source, open_recorded_model
from flagembed.index.multivector import MultiVectorIndex
from flagembed.index.options import DEFAULT_WEIGHTS, MODES, Fusion, check_fusion, check_modes, check_weights
from flagembed.index.results import SearchResults, check_top_k, gather_results, top_k_rows
from flagembed.index.sparse import SparseIndex
from flagembed.index.storage import MANIFEST, IndexFormatError, check_model, param, read_manifest, write_index_dir
from flagembed.inference import Embedder, M3Embedder, M3Output
from flagembed.inference.inputs import as_corpus_list, as_text_list

logger = logging.getLogger(__name__)

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
        bm25: BM25Index | None = None,
        weights: Mapping[str, float] | None = None,
        fusion: Fusion = "weighted",
        rrf_k: int = 60,
        candidates: int = 100,
        docs: DocStore | None = None,
    ) -> None:
        self.embedder = embedder
        self.docs = docs  # titles, texts and metadata returned with hits (None: not stored)
        given = (("dense", dense), ("sparse", sparse), ("colbert", colbert), ("bm25", bm25))
        self.indexes: dict[str, Any] = {m: ix for m, ix in given if ix is not None}
        if not self.indexes:
            raise ValueError("a HybridSearcher needs at least one of dense, sparse, colbert, bm25")
        self.weights = dict(weights) if weights is not None else dict(DEFAULT_WEIGHTS)
        self.fusion = check_fusion(fusion)
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
        store_docs: bool = True,
        **kwargs: Any,
    ) -> HybridSearcher:
        """Encode ``corpus`` (strings or title/text dicts) once and index it in every mode.

        With ``store_docs`` (default) each document's title, text and other fields (as metadata) are
        kept, saved, and returned with the hits in ``SearchResults.docs``.

        Raises:
            ValueError: sparse/ColBERT modes with a non-M3 embedder, bad modes or ids.
        """
        available = MODES if isinstance(embedder, M3Embedder) else ("dense", "bm25")
        chosen = check_modes(modes, available) if modes is not None else [m for m in available if m != "bm25"]
        info = model_info(embedder)
        searcher = cls(
            embedder,
            dense=DenseIndex(embedder.dim, kind=dense_kind) if "dense" in chosen else None,  # type: ignore[arg-type]
            sparse=SparseIndex(getattr(embedder, "vocab_size", None)) if "sparse" in chosen else None,
            colbert=MultiVectorIndex(embedder.colbert_dim) if "colbert" in chosen else None,  # type: ignore[attr-defined]
            docs=DocStore() if store_docs else None,
            bm25=BM25Index() if "bm25" in chosen else None,
            **kwargs,
        )
        for ix in searcher.indexes.values():
            ix.model_info = info
        searcher.add(ids if ids is not None else [str(i) for i in range(len(corpus))], corpus, show_progress)
        return searcher

    def add(self, ids: Sequence[str], corpus: Any, show_progress: bool | None = None) -> None:
        """Encode documents with the embedder and add them to every index (and to the stored documents)."""
        texts, single = as_corpus_list(corpus)
        if single:
            raise TypeError("add() takes a list of documents, got a single one")
        first = next(iter(self.indexes.values()))
        new = first._ids.check_new(ids, len(texts))  # validate once before touching any index
        enc = self._encode(texts, [m for m in self.modes if m != "bm25"], query=False, show_progress=show_progress)
        self._add_encoded(new, enc, texts)
        if self.docs is not None:
            self.docs.add(new, corpus)

    def _add_encoded(self, ids: list[str], enc: M3Output, texts: list[str]) -> None:
        for mode, ix in self.indexes.items():
            if mode == "bm25":
                ix.add(ids, texts)
            elif mode == "dense":
                ix.add(ids, enc.dense)
            elif mode == "sparse":
                ix.add(ids, enc.sparse)
            else:
                ix.add(ids, enc.colbert)

    def remove(self, ids: Sequence[str]) -> int:
        """Remove documents from every index; returns how many were removed."""
        if isinstance(ids, str):
            raise TypeError("remove() takes a list of ids, got a single string")
        ids = list(ids)
        counts = [ix.remove(ids) for ix in self.indexes.values()]
        if self.docs is not None:
            self.docs.remove(ids)
        return counts[0]

    # ------------------------------------------------------------------ searching
    def _encode(self, texts: list[str], modes: Sequence[str], *, query: bool, show_progress: bool | None) -> M3Output:
        if not modes:
            return M3Output()  # BM25 only: nothing to encode
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
        enc = self._encode(items, [m for m in chosen if m != "bm25"], query=True, show_progress=False)
        return self.search_encoded(
            enc, top_k, modes=chosen, weights=w, fusion=fusion, candidates=candidates, texts=items
        )

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
        texts: Sequence[str] | None = None,
    ) -> SearchResults:
        """Search with already-encoded queries (an :class:`M3Output` holding the needed outputs).

        The hits' stored documents come in ``docs`` when this searcher stores them.
        """
        res = self._search_encoded(queries, top_k, modes, weights, fusion, candidates, texts)
        if self.docs is not None:
            res.docs = [[self.docs.get(d) for d in row] for row in res.ids]
        return res

    def _search_encoded(
        self,
        queries: M3Output,
        top_k: int,
        modes: str | Sequence[str] | None,
        weights: Mapping[str, float] | Sequence[float] | str | None,
        fusion: Fusion | None,
        candidates: int | None,
        texts: Sequence[str] | None,
    ) -> SearchResults:
        chosen = check_modes(modes, self.modes)
        top_k = check_top_k(top_k)
        w = self._weights(weights, chosen)
        fusion = check_fusion(fusion or self.fusion)
        n = len(queries) if texts is None else len(texts)
        if len(self) == 0 or n == 0:
            return SearchResults.empty(n)
        reps = {"dense": queries.dense, "sparse": queries.sparse, "colbert": queries.colbert, "bm25": texts}
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
                fused += w[m] * self._exact(m, reps[m], qi, union, per_mode)
            idx, vals = top_k_rows((fused / total)[None, :], top_k)
            res = gather_results(idx, vals, union)
            out.ids += res.ids
            out.scores += res.scores
        return out

    def _exact(self, mode: str, rep: Any, qi: int, ids: list[str], per_mode: dict[str, SearchResults]) -> np.ndarray:
        ix = self.indexes[mode]
        if mode == "bm25":  # unbounded: divided by the query's best BM25 score, like cosine in 0..1
            best = per_mode["bm25"].scores[qi][0] if per_mode["bm25"].scores[qi] else 0.0
            return normalized_bm25(ix.scores([rep[qi]], ids)[0], best)
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
        """Write every index, the stored documents and a manifest (model identity and source) atomically."""
        info = model_info(self.embedder) if self.embedder is not None else None
        params = {
            "modes": self.modes,
            "weights": self.weights,
            "fusion": self.fusion,
            "rrf_k": self.rrf_k,
            "candidates": self.candidates,
            "model_source": model_source(self.embedder) if self.embedder is not None else None,
            "docs": self.docs is not None,
            "count": len(self),
        }

        def write(tmp: Path) -> None:
            for mode, ix in self.indexes.items():
                ix.model_info = info
                ix.save(tmp / mode)
            if self.docs is not None:
                self.docs.write(tmp / DOCS_FILE)

        write_index_dir(directory, "hybrid", params, write, info)

    @classmethod
    def load(
        cls,
        directory: str | os.PathLike[str],
        embedder: Embedder | None = None,
        *,
        trust_remote_code: bool = False,
        **embedder_kwargs: Any,
    ) -> HybridSearcher:
        """Open a saved searcher; without ``embedder`` the recorded model is loaded with its settings.

        Every file is verified before any model is built. The recorded model is found by its absolute
        folder or its name and must have the same weights fingerprint; remote code stays off unless the
        index was built with it and ``trust_remote_code=True`` is passed.

        Raises:
            IndexFormatError: missing, corrupted or inconsistent files.
            IndexMismatchError: ``embedder`` (or the recorded model as found now) differs from the model
                the index was built with.
            ValueError: the index needs remote code and ``trust_remote_code`` is not True.
        """
        path = Path(directory)
        manifest = read_manifest(path, "hybrid", required=_required_files)
        info = manifest.get("model")
        p = _check_params(manifest, path)
        loaders = {
            "dense": DenseIndex.load,
            "sparse": SparseIndex.load,
            "colbert": MultiVectorIndex.load,
            "bm25": BM25Index.load,
        }
        subs = {m: loaders[m](path / m, model_info=info) for m in p["modes"]}
        ids = {m: set(ix.ids) for m, ix in subs.items()}
        if len({frozenset(v) for v in ids.values()}) > 1:
            raise IndexFormatError(f"{path} is inconsistent: the {', '.join(subs)} indexes hold different ids")
        docs = DocStore.load(path / DOCS_FILE, next(iter(ids.values()))) if p["docs"] else None
        if embedder is None and info is not None:
            embedder = open_recorded_model(
                info, p["model_source"], path, trust_remote_code=trust_remote_code, **embedder_kwargs
            )
        if embedder is not None and info is not None:
            check_model(manifest, model_info(embedder), path)
        return cls(
            embedder,
            **subs,
            weights=p["weights"],
            fusion=p["fusion"],
            rrf_k=p["rrf_k"],
            candidates=p["candidates"],
            docs=docs,
        )


def _required_files(params: Mapping[str, Any]) -> list[str]:
    """What a hybrid index directory must hold: one sub-index manifest per mode, and the documents."""
    if not isinstance(params.get("modes"), list):
        raise ValueError(f"params.modes = {params.get('modes')!r:.80} must be a list of modes")
    files = [f"{m}/{MANIFEST}" for m in check_modes(params["modes"])]
    return files + ([DOCS_FILE] if params.get("docs") is True else [])


def _check_params(manifest: Mapping[str, Any], path: Path) -> dict[str, Any]:
    """A hybrid manifest's params, validated (modes, weights, fusion, rrf_k, candidates, source, docs).

    Raises:
        IndexFormatError: a missing or invalid parameter (names it).
    """
    raw = manifest["params"]
    weights = param(manifest, "weights", dict, path)
    numbers = all(isinstance(w, (int, float)) and not isinstance(w, bool) and w >= 0 for w in weights.values())
    if set(weights) - set(MODES) or not numbers or not np.isfinite(list(weights.values())).all():
        raise IndexFormatError(f"{path}/{MANIFEST}: params.weights = {weights!r:.80} must map modes to numbers >= 0")
    try:
        fusion = check_fusion(raw.get("fusion"))
    except ValueError as exc:
        raise IndexFormatError(f"{path}/{MANIFEST} has invalid params: {exc}") from exc
    source = raw.get("model_source")
    if source is not None and not isinstance(source, dict):
        raise IndexFormatError(f"{path}/{MANIFEST}: params.model_source must be an object")
    return {
        "modes": check_modes(raw["modes"]),
        "weights": weights,
        "fusion": fusion,
        "rrf_k": param(manifest, "rrf_k", int, path),
        "candidates": param(manifest, "candidates", int, path),
        "model_source": source,
        "docs": param(manifest, "docs", bool, path),
    }
