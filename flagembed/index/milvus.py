"""MilvusStore: a Milvus collection (Milvus Lite file or a Milvus server) searched like :class:`HybridSearcher`.

One collection per model: ``id`` (VARCHAR primary key), ``dense`` (FLOAT_VECTOR, FLAT / inner product),
``sparse`` (SPARSE_FLOAT_VECTOR, inverted index / inner product; BGE-M3 lexical weights), ``title``, ``text``
and ``metadata`` (JSON, for filters). The model identity and the search defaults live in the collection's
``flagembed.config`` property, so another process reopens the collection with the same model.

Weighted hybrid search is Milvus' ``hybrid_search`` with ``WeightedRanker`` (raw scores, divided by the weight
sum as in ``HybridSearcher``); RRF fuses one Milvus search per mode here (weighted, as in-process).
ColBERT vectors are not stored in Milvus: use
``MultiVectorIndex`` (in-process) or rescore Milvus' candidates with ``M3Embedder.compute_score``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from flagembed.index.docs import doc_record
from flagembed.index.identity import model_info, model_source, open_recorded_model
from flagembed.index.options import DEFAULT_WEIGHTS, Fusion, check_fusion, check_modes, check_weights
from flagembed.index.results import SearchResults, check_top_k, gather_results, top_k_rows
from flagembed.index.storage import IndexMismatchError, check_model, config_hash
from flagembed.inference import Embedder, M3Embedder, M3Output
from flagembed.inference.inputs import as_corpus_list, as_text_list

logger = logging.getLogger(__name__)

DEFAULT_COLLECTION = "flagembed"
CONFIG_KEY = "flagembed.config"
MAX_TEXT = 65_535  # Milvus' VARCHAR limit (bytes)
MAX_ID = 512
INSERT_BATCH = 1000
_EMPTY_SPARSE_WEIGHT = 1e-30  # Milvus refuses empty sparse rows; a special token (never in a query) stands in
_OPEN: dict[str, int] = {}  # open stores per Milvus Lite file in this process (they share one embedded server)


def _milvus() -> Any:
    try:
        import pymilvus
    except ImportError:
        hint = 'pip install "flagembed[milvus]"'
        raise ImportError(f"the Milvus store needs pymilvus (and milvus-lite for .db files): {hint}") from None
    return pymilvus


def parse_store(spec: str | os.PathLike[str]) -> tuple[str, str]:
    """``(uri, collection)`` from ``milvus://host:port/collection`` (a server) or ``file.db[#collection]``.

    Raises:
        ValueError: neither form (names the two valid ones).
    """
    text = os.fspath(spec)
    if text.startswith(("milvus://", "milvus+https://")):
        scheme = "https" if text.startswith("milvus+https://") else "http"
        rest = text.split("://", 1)[1]
        host, _, name = rest.partition("/")
        if not host:
            raise ValueError(f"store {text!r}: no host; use milvus://host:19530/collection")
        return f"{scheme}://{host}", name.strip("/") or DEFAULT_COLLECTION
    path, _, name = text.partition("#")
    if not path.endswith(".db"):
        raise ValueError(
            f"store {text!r}: use milvus://host:port/collection (a Milvus server) or a .db file (Milvus Lite)"
        )
    return str(Path(path).absolute()), name or DEFAULT_COLLECTION


class MilvusStore:
    """Dense and sparse retrieval from a Milvus collection, with the :class:`HybridSearcher` search interface.

    Example:
        >>> store = MilvusStore.create("docs.db", M3Embedder("BAAI/bge-m3"))
        >>> store.add(ids, corpus)
        >>> store.search("what is bge-m3?", top_k=5, modes=["dense", "sparse"], fusion="rrf").ids
        >>> MilvusStore.open("docs.db").search("...", filter='metadata["year"] >= 2020')
    """

    def __init__(self, client: Any, uri: str, collection: str, embedder: Embedder | None, config: dict[str, Any]):
        self.client, self.uri, self.collection = client, uri, collection
        _OPEN[uri] = _OPEN.get(uri, 0) + 1
        self._closed = False
        self.embedder = embedder
        self.config = config
        self.weights = dict(config.get("weights") or DEFAULT_WEIGHTS)
        self.fusion: Fusion = check_fusion(config.get("fusion", "weighted"))
        self.rrf_k = int(config.get("rrf_k", 60))
        self.candidates = int(config.get("candidates", 100))
        self.docs = True  # hits come with their stored title, text and metadata

    @property
    def modes(self) -> list[str]:
        return list(self.config["modes"])

    # ------------------------------------------------------------------ creating and opening
    @classmethod
    def create(
        cls,
        store: str | os.PathLike[str],
        embedder: Embedder,
        *,
        modes: str | Sequence[str] | None = None,
        overwrite: bool = False,
        weights: Mapping[str, float] | None = None,
        fusion: Fusion = "weighted",
        rrf_k: int = 60,
        candidates: int = 100,
    ) -> MilvusStore:
        """A new, empty collection for ``embedder``'s vectors (``modes``: dense and, for M3, sparse).

        Raises:
            ValueError: the collection exists (without ``overwrite``), or a mode the model cannot give.
        """
        pymilvus = _milvus()
        uri, name = parse_store(store)
        available = ["dense", "sparse"] if isinstance(embedder, M3Embedder) else ["dense"]
        chosen = check_modes(modes, available) if modes is not None else available
        client = _client(uri)
        if client.has_collection(name):
            if not overwrite:
                raise ValueError(f"collection {name!r} already exists in {uri}; open it, or pass overwrite=True")
            client.drop_collection(name)
        dt = pymilvus.DataType
        schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", dt.VARCHAR, is_primary=True, max_length=MAX_ID)
        schema.add_field("title", dt.VARCHAR, max_length=MAX_TEXT)
        schema.add_field("text", dt.VARCHAR, max_length=MAX_TEXT)
        schema.add_field("metadata", dt.JSON)
        index = client.prepare_index_params()
        if "dense" in chosen:
            schema.add_field("dense", dt.FLOAT_VECTOR, dim=embedder.dim)
            index.add_index("dense", index_type="FLAT", metric_type="IP")
        if "sparse" in chosen:
            schema.add_field("sparse", dt.SPARSE_FLOAT_VECTOR)
            index.add_index("sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="IP")
        config = {
            "modes": chosen,
            "model": model_info(embedder),
            "source": model_source(embedder),
            "weights": dict(weights) if weights is not None else {m: DEFAULT_WEIGHTS[m] for m in chosen},
            "fusion": check_fusion(fusion),
            "rrf_k": rrf_k,
            "candidates": candidates,
            "placeholder_token": _placeholder_token(embedder),
        }
        props = {CONFIG_KEY: json.dumps(config)}
        client.create_collection(name, schema=schema, index_params=index, properties=props)
        return cls(client, uri, name, embedder, config)

    @classmethod
    def open(
        cls,
        store: str | os.PathLike[str],
        embedder: Embedder | None = None,
        *,
        trust_remote_code: bool = False,
        **model_kwargs: Any,
    ) -> MilvusStore:
        """Reopen a collection made by :meth:`create`; without ``embedder`` the recorded model is loaded.

        Raises:
            FileNotFoundError: no such collection.
            IndexMismatchError: ``embedder`` is not the model the collection was built with.
        """
        uri, name = parse_store(store)
        client = _client(uri)
        if not client.has_collection(name):
            _close_client(client, uri)
            raise FileNotFoundError(f"no collection {name!r} in {uri}")
        props = client.describe_collection(name).get("properties") or {}
        if CONFIG_KEY not in props:
            _close_client(client, uri)
            raise ValueError(f"collection {name!r} in {uri} was not made by flagembed (no {CONFIG_KEY} property)")
        config = json.loads(props[CONFIG_KEY])
        client.load_collection(name)  # a reopened collection starts released (not searchable)
        store_obj = cls(client, uri, name, embedder, config)
        try:
            if embedder is None:
                source, trust = config.get("source"), trust_remote_code
                store_obj.embedder = open_recorded_model(
                    config["model"], source, Path(uri), trust_remote_code=trust, **model_kwargs
                )
            else:
                check_same_model(config["model"], embedder, f"{uri}#{name}")
        except BaseException:
            store_obj.close()
            raise
        return store_obj

    def close(self) -> None:
        """Close the connection (and stop the embedded Milvus Lite server, so another process can open the file)."""
        if self._closed:
            return
        self._closed = True
        self.client.close()
        _OPEN[self.uri] -= 1
        if self.uri.endswith(".db") and not _OPEN[self.uri]:
            _release_lite(self.uri)

    def __enter__(self) -> MilvusStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        rows = self.client.query(self.collection, filter="", output_fields=["count(*)"])
        return int(rows[0]["count(*)"])

    # ------------------------------------------------------------------ writing
    def add(
        self, ids: Sequence[str], corpus: Any, *, batch_size: int = 10_000, show_progress: bool | None = None
    ) -> None:
        """Encode documents in process (``batch_size`` at a time) and insert them."""
        if self.embedder is None:
            raise ValueError("this store has no embedder: use add_encoded() with encoded documents")
        texts, single = as_corpus_list(corpus)
        if single:
            raise TypeError("add() takes a list of documents, got a single one")
        ids = self._check_new(ids, len(texts))
        docs = list(corpus)
        for lo in range(0, len(ids), batch_size):
            part = docs[lo : lo + batch_size]
            enc = self._encode(part, query=False, show_progress=show_progress)
            self.add_encoded(ids[lo : lo + batch_size], dense=enc.dense, sparse=enc.sparse, docs=part, checked=True)

    def add_encoded(
        self,
        ids: Sequence[str],
        *,
        dense: np.ndarray | None = None,
        sparse: sp.csr_matrix | None = None,
        docs: Sequence[Any] | None = None,
        checked: bool = False,
    ) -> None:
        """Insert already-encoded documents (e.g. from Ray shards), ``INSERT_BATCH`` rows per request.

        Raises:
            ValueError: a repeated or already stored id, a missing output for one of the store's modes, a
                wrong dimension, or a text over Milvus' 65,535-byte VARCHAR limit (names the id).
        """
        ids = list(ids) if checked else self._check_new(ids, len(ids))
        if "dense" in self.modes:
            if dense is None:
                raise ValueError("this store has a dense field: pass dense vectors")
            dense = np.asarray(dense, dtype=np.float32)
            if dense.shape != (len(ids), self.config["model"]["dim"]):
                raise ValueError(f"dense must be ({len(ids)}, {self.config['model']['dim']}), got {dense.shape}")
        if "sparse" in self.modes:
            if sparse is None:
                raise ValueError("this store has a sparse field: pass sparse lexical weights (CSR)")
            sparse = sp.csr_matrix(sparse)
        for lo in range(0, len(ids), INSERT_BATCH):
            rows = list(self._rows(ids, dense, sparse, docs, lo, min(lo + INSERT_BATCH, len(ids))))
            self.client.insert(self.collection, rows)

    def _rows(self, ids: list[str], dense: Any, sparse: Any, docs: Any, lo: int, hi: int) -> Iterator[dict[str, Any]]:
        placeholder = {int(self.config.get("placeholder_token") or 0): _EMPTY_SPARSE_WEIGHT}
        for i in range(lo, hi):
            rec = doc_record(docs[i]) if docs is not None else {"title": "", "text": "", "metadata": {}}
            for field in ("title", "text"):
                if len(rec[field].encode("utf-8")) > MAX_TEXT:
                    raise ValueError(f"document {ids[i]!r}: {field} is over Milvus' {MAX_TEXT}-byte VARCHAR limit")
            row = {"id": ids[i], **rec}
            if dense is not None and "dense" in self.modes:
                row["dense"] = dense[i]
            if sparse is not None and "sparse" in self.modes:
                a, b = sparse.indptr[i], sparse.indptr[i + 1]
                weights = {int(t): float(w) for t, w in zip(sparse.indices[a:b], sparse.data[a:b]) if w != 0}
                row["sparse"] = weights or placeholder
            yield row

    def _check_new(self, ids: Sequence[str], n: int) -> list[str]:
        if isinstance(ids, str):
            raise TypeError("ids must be a list of strings, got a single string")
        ids = [str(i) for i in ids]
        if len(ids) != n:
            raise ValueError(f"{len(ids)} ids for {n} documents")
        seen: set[str] = set()
        for i, d in enumerate(ids):
            if not d or len(d.encode("utf-8")) > MAX_ID:
                raise ValueError(f"ids[{i}] = {d!r:.80} must be 1 to {MAX_ID} bytes")
            if d in seen:
                raise ValueError(f"ids[{i}] = {d!r} is repeated")
            seen.add(d)
        stored = self._existing(ids)
        if stored:
            raise ValueError(f"id {stored[0]!r} is already stored ({len(stored)} of these ids are); remove() it first")
        return ids

    def _existing(self, ids: Sequence[str]) -> list[str]:
        found: list[str] = []
        for lo in range(0, len(ids), INSERT_BATCH):
            rows = self.client.get(self.collection, ids=list(ids[lo : lo + INSERT_BATCH]), output_fields=["id"])
            found.extend(r["id"] for r in rows)
        return found

    def remove(self, ids: Sequence[str]) -> int:
        """Delete documents by id; returns how many were stored."""
        if isinstance(ids, str):
            raise TypeError("remove() takes a list of ids, got a single string")
        present = self._existing([str(i) for i in ids])
        if present:
            self.client.delete(self.collection, ids=present)
        return len(present)

    # ------------------------------------------------------------------ searching
    def _encode(
        self, items: list[Any], *, query: bool, show_progress: bool | None, modes: Sequence[str] = ()
    ) -> M3Output:
        if self.embedder is None:
            raise ValueError("this store has no embedder: use search_encoded() with encoded queries")
        modes = modes or self.modes
        fn = self.embedder.encode_queries if query else self.embedder.encode_corpus
        if isinstance(self.embedder, M3Embedder):
            want = {"return_dense": "dense" in modes, "return_sparse": "sparse" in modes}
            return fn(items, output="batch", return_colbert_vecs=False, show_progress=show_progress, **want)
        return M3Output(dense=fn(items, show_progress=show_progress))

    def search(
        self,
        queries: str | Sequence[str],
        top_k: int = 10,
        *,
        modes: str | Sequence[str] | None = None,
        weights: Mapping[str, float] | Sequence[float] | str | None = None,
        fusion: Fusion | None = None,
        candidates: int | None = None,
        filter: str = "",
    ) -> SearchResults:
        """Encode queries and search; ``filter`` is a Milvus boolean expression (``metadata["year"] > 2020``)."""
        chosen = check_modes(modes, self.modes)
        check_top_k(top_k)
        items, _ = as_text_list(queries, "queries")
        for i, q in enumerate(items):
            if not q.strip():
                raise ValueError(f"queries[{i}] is empty")
        enc = self._encode(items, query=True, show_progress=False, modes=chosen)
        return self.search_encoded(enc, top_k, modes=chosen, weights=weights, fusion=fusion, candidates=candidates,
                                   filter=filter)  # fmt: skip

    def search_encoded(
        self,
        queries: M3Output,
        top_k: int = 10,
        *,
        modes: str | Sequence[str] | None = None,
        weights: Mapping[str, float] | Sequence[float] | str | None = None,
        fusion: Fusion | None = None,
        candidates: int | None = None,
        filter: str = "",
        texts: Sequence[str] | None = None,
    ) -> SearchResults:
        """Search with already-encoded queries: one mode directly, several through ``hybrid_search``.

        Raises:
            ValueError: a mode the queries lack, or RRF with unequal weights (Milvus' RRFRanker has none).
        """
        pymilvus = _milvus()
        chosen = check_modes(modes, self.modes)
        top_k = check_top_k(top_k)
        default = {m: self.weights.get(m, DEFAULT_WEIGHTS[m]) for m in chosen}
        w = check_weights(default if weights is None else weights, chosen)
        fusion = check_fusion(fusion or self.fusion)
        reps = {"dense": queries.dense, "sparse": queries.sparse}
        for m in chosen:
            if reps[m] is None:
                raise ValueError(f"queries were not encoded for mode {m!r}")
        n = len(queries)
        data = {m: _query_data(m, reps[m]) for m in chosen}
        out = ["id", "title", "text", "metadata"]
        if len(chosen) == 1:
            m = chosen[0]
            hits = self.client.search(self.collection, data=data[m], anns_field=m, limit=top_k, filter=filter,
                                      search_params={"metric_type": "IP"}, output_fields=out)  # fmt: skip
            return _results(hits, n, 1.0)
        pool = max(top_k, candidates or self.candidates)
        if fusion == "rrf":
            return self._rrf(data, chosen, w, pool, top_k, filter)
        ranker, scale = pymilvus.WeightedRanker(*(w[m] for m in chosen), norm_score=False), 1 / sum(w.values())
        res = SearchResults(ids=[], scores=[], docs=[])
        for qi in range(n):  # hybrid_search takes one query per request
            reqs = [pymilvus.AnnSearchRequest(data=[data[m][qi]], anns_field=m, param={"metric_type": "IP"},
                                              limit=pool, expr=filter or None) for m in chosen]  # fmt: skip
            hits = self.client.hybrid_search(self.collection, reqs, ranker, limit=top_k, output_fields=out)
            one = _results(hits, 1, scale)
            res.ids += one.ids
            res.scores += one.scores
            res.docs += one.docs  # type: ignore[operator]
        return res


    def _rrf(
        self, data: dict[str, list[Any]], modes: list[str], w: dict[str, float], pool: int, top_k: int, filter: str
    ) -> SearchResults:
        """Weighted RRF, ``sum_m w_m / (rrf_k + rank_m)``, over Milvus' per-mode hits (as HybridSearcher fuses).

        Milvus' own ``RRFRanker`` has no weights and ranks within its sub-searches differently on ties, so
        the ranks are fused here from one ``search`` per mode.
        """
        out = ["id", "title", "text", "metadata"]
        per_mode = {
            m: self.client.search(self.collection, data=data[m], anns_field=m, limit=pool, filter=filter,
                                  search_params={"metric_type": "IP"}, output_fields=out)  # fmt: skip
            for m in modes
        }
        res = SearchResults(ids=[], scores=[], docs=[])
        for qi in range(len(data[modes[0]])):
            fused: dict[str, float] = {}
            docs: dict[str, dict[str, Any]] = {}
            for m in modes:
                for rank, hit in enumerate(per_mode[m][qi], 1):
                    key = str(hit["id"])
                    fused[key] = fused.get(key, 0.0) + w[m] / (self.rrf_k + rank)
                    docs[key] = _doc(hit.get("entity") or {})
            keys = list(fused)
            idx, vals = top_k_rows(np.array([[fused[k] for k in keys]]), top_k)
            one = gather_results(idx, vals, keys)
            res.ids += one.ids
            res.scores += one.scores
            res.docs.append([docs[k] for k in one.ids[0]])  # type: ignore[union-attr]
        return res

def check_same_model(recorded: Mapping[str, Any], embedder: Embedder, where: str | Path) -> None:
    """Refuse an embedder whose identity differs from the recorded one (names the differing settings).

    Raises:
        IndexMismatchError: other weights or settings.
    """
    check_model({"model": recorded, "config_hash": config_hash(recorded)}, model_info(embedder), where)


def _close_client(client: Any, uri: str) -> None:
    client.close()
    if uri.endswith(".db") and not _OPEN.get(uri):
        _release_lite(uri)


def _release_lite(uri: str) -> None:
    """Stop this process' embedded Milvus Lite server for ``uri`` once no store here uses it."""
    from milvus_lite.server_manager import server_manager_instance

    server_manager_instance.release_server(uri)


def _client(uri: str) -> Any:
    pymilvus = _milvus()
    if uri.endswith(".db"):
        Path(uri).parent.mkdir(parents=True, exist_ok=True)
    try:
        return pymilvus.MilvusClient(uri)
    except pymilvus.exceptions.MilvusException as exc:
        lite = uri.endswith(".db")
        hint = " (is another process using this Milvus Lite file? one process at a time)" if lite else ""
        raise OSError(f"cannot open Milvus at {uri}: {exc.message}{hint}") from None


def _placeholder_token(embedder: Embedder) -> int:
    unused = sorted(getattr(embedder, "unused_ids", ()) or ())
    return int(unused[0]) if unused else 0


def _query_data(mode: str, rep: Any) -> list[Any]:
    if mode == "dense":
        return [np.asarray(v, dtype=np.float32) for v in np.asarray(rep)]
    csr = sp.csr_matrix(rep)
    rows = []
    for i in range(csr.shape[0]):
        a, b = csr.indptr[i], csr.indptr[i + 1]
        rows.append({int(t): float(v) for t, v in zip(csr.indices[a:b], csr.data[a:b]) if v != 0})
    return rows


def _results(hits: Any, n: int, scale: float) -> SearchResults:
    res = SearchResults(ids=[], scores=[], docs=[])
    for qi in range(n):
        row = list(hits[qi]) if qi < len(hits) else []
        res.ids.append([str(h["id"]) for h in row])
        res.scores.append([float(h["distance"]) * scale for h in row])
        res.docs.append([_doc(h.get("entity") or {}) for h in row])  # type: ignore[union-attr]
    return res


def _doc(entity: Mapping[str, Any]) -> dict[str, Any]:
    meta = entity.get("metadata") or {}
    return {"title": entity.get("title") or "", "text": entity.get("text") or "", "metadata": meta}


__all__ = ["MilvusStore", "parse_store", "IndexMismatchError"]
