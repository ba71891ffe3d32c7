"""``POST /v1/search``: one index served next to the models, in-process or in Milvus behind one interface."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from flagembed.serve.limits import ApiError


@dataclass
class SearchHost:
    """A loaded searcher (:class:`~flagembed.index.HybridSearcher` or :class:`~flagembed.index.milvus.MilvusStore`).

    Both answer the same ``search(queries, top_k, modes=, weights=, fusion=)``; only Milvus takes ``filter``.
    Calls are serialised: the searcher's query encoder is one model on one device.
    """

    searcher: Any
    source: str
    kind: str  # "index" or "milvus"
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def modes(self) -> tuple[str, ...]:
        return tuple(self.searcher.modes)

    def info(self) -> dict[str, Any]:
        return {"source": self.source, "kind": self.kind, "modes": list(self.modes), "documents": len(self.searcher)}

    def search(self, queries: list[str], top_k: int, modes: Any, weights: Any, fusion: Any, filter: str) -> Any:
        """Run one search call; bad modes/weights/filters become 422s naming the field."""
        kw: dict[str, Any] = {"top_k": top_k, "modes": modes, "weights": weights, "fusion": fusion}
        if filter:
            if self.kind != "milvus":
                raise ApiError(422, "filter needs a Milvus store (serve --store); this server has an index directory",
                               param="filter")  # fmt: skip
            kw["filter"] = filter
        try:
            with self._lock:
                return self.searcher.search(queries, **kw)
        except (ValueError, TypeError) as exc:
            raise ApiError(422, str(exc), param="search") from exc

    def close(self) -> None:
        close = getattr(self.searcher, "close", None)
        if close is not None:
            close()


def load_search(
    index: str | None = None,
    store: str | None = None,
    *,
    device: str | None = None,
    trust_remote_code: bool = False,
) -> SearchHost | None:
    """Open ``index`` (a directory of ``flagembed index build``) or ``store`` (``file.db[#name]`` / ``milvus://``).

    Raises:
        ValueError: both were given, or the store address is malformed.
    """
    if index is None and store is None:
        return None
    if index is not None and store is not None:
        raise ValueError("give --index (an index directory) or --store (a Milvus collection), not both")
    if store is not None:
        from flagembed.index.milvus import MilvusStore, parse_store

        parse_store(store)
        return SearchHost(MilvusStore.open(store, device=device, trust_remote_code=trust_remote_code), store, "milvus")
    from pathlib import Path

    from flagembed.index import HybridSearcher

    searcher = HybridSearcher.load(Path(index), device=device, trust_remote_code=trust_remote_code)  # type: ignore[arg-type]
    return SearchHost(searcher, str(index), "index")
