"""Fakes and a threaded server helper shared by tests/serve (a uniquely named module, unlike conftest)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from flagembed.serve import make_server

POISON = "poison"  # a text containing this makes the fakes raise, to test failure isolation


class FakeM3:
    """Implements the M3 protocol from the tiny tokenizer's ids, so expected outputs are easy to recompute."""

    def __init__(self, tokenizer: Any, dim: int = 4, delay: float = 0.0) -> None:
        self.tokenizer = tokenizer
        self.dim = dim
        self.delay = delay
        self.calls: list[int] = []

    def ids(self, text: str, max_length: int = 512) -> list[int]:
        return self.tokenizer(text, truncation=True, max_length=max_length)["input_ids"]

    def weights(self, text: str, max_length: int = 512) -> dict[str, float]:
        special = set(self.tokenizer.all_special_ids)
        return {str(i): (i % 7 + 1) / 8 for i in self.ids(text, max_length) if i not in special}

    def colbert(self, text: str, max_length: int = 512) -> np.ndarray:
        ids = self.ids(text, max_length)[1:]
        return np.array([[i, i % 3, len(ids), 0.5] for i in ids], dtype=np.float32)[:, : self.dim]

    def dense(self, text: str, max_length: int = 512) -> np.ndarray:
        ids = self.ids(text, max_length)
        return np.array([len(ids), sum(ids), ids[1] if len(ids) > 1 else 0, 1.0], dtype=np.float32)

    def encode(
        self,
        texts: list[str],
        *,
        return_dense: bool = True,
        return_sparse: bool = False,
        return_colbert_vecs: bool = False,
        max_length: int = 512,
        **kwargs: Any,
    ) -> dict[str, Any]:
        self.calls.append(len(texts))
        if any(POISON in t for t in texts):
            raise ValueError("poisoned input")
        if self.delay:
            time.sleep(self.delay)
        return {
            "dense_vecs": np.stack([self.dense(t, max_length) for t in texts]) if return_dense else None,
            "lexical_weights": [self.weights(t, max_length) for t in texts] if return_sparse else None,
            "colbert_vecs": [self.colbert(t, max_length) for t in texts] if return_colbert_vecs else None,
        }


class FakeReranker:
    """Implements the reranker protocol: score = shared words minus a length penalty."""

    def __init__(self, tokenizer: Any = None) -> None:
        self.tokenizer = tokenizer
        self.calls: list[int] = []

    @staticmethod
    def score(q: str, p: str) -> float:
        return len(set(q.split()) & set(p.split())) - 0.01 * len(p.split())

    def compute_score(self, sentence_pairs: list[tuple[str, str]], **kwargs: Any) -> list[float]:
        self.calls.append(len(sentence_pairs))
        if any(POISON in p for _, p in sentence_pairs):
            raise ValueError("poisoned document")
        return [self.score(q, p) for q, p in sentence_pairs]


@contextlib.contextmanager
def serve_in_thread(app: Any, **kwargs: Any) -> Iterator[tuple[str, Any]]:
    """Run ``app`` under uvicorn on a free loopback port; yields ``(base_url, server)``."""
    server = make_server(app, "127.0.0.1", 0, log_level="warning", **kwargs)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", server
    finally:
        server.should_exit = True
        thread.join(30)
