"""A small Python client for a flagembed server, plus the official ``openai`` client pointed at one."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

import httpx
import numpy as np


class ServeError(Exception):
    """The server answered with an error; ``status`` and the server's message are kept."""

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message
        self.code = code


def openai_client(base_url: str = "http://127.0.0.1:8000", api_key: str | None = None, **kwargs: Any) -> Any:
    """The official ``openai.OpenAI`` client talking to a flagembed server (``/v1`` is appended)."""
    from openai import OpenAI

    return OpenAI(base_url=base_url.rstrip("/") + "/v1", api_key=api_key or "unused", **kwargs)


class FlagEmbedClient:
    """Call every flagembed endpoint and get numpy arrays back.

    Example:
        >>> client = FlagEmbedClient("http://127.0.0.1:8000", api_key="secret")
        >>> vecs = client.embed(["hello", "world"])            # (2, dim) float32
        >>> weights = client.sparse(["hello"], return_tokens=True)[0]
        >>> ranked = client.rerank("what is BGE?", ["BGE is an embedding model", "cats"])
    """

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        api_key: str | None = None,
        timeout: float = 60.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout, transport=transport)

    def __enter__(self) -> FlagEmbedClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._check(self._http.post(path, json={k: v for k, v in body.items() if v is not None}))

    def _get(self, path: str) -> dict[str, Any]:
        return self._check(self._http.get(path))

    @staticmethod
    def _check(resp: httpx.Response) -> dict[str, Any]:
        if resp.status_code >= 400:
            try:
                err = resp.json().get("error", {})
            except ValueError:
                err = {"message": resp.text}
            raise ServeError(resp.status_code, str(err.get("message")), err.get("code"))
        return resp.json()

    def embed(
        self,
        texts: str | Sequence[str],
        *,
        model: str | None = None,
        dimensions: int | None = None,
        input_type: str | None = None,
        truncate: bool | None = None,
    ) -> np.ndarray:
        """Dense embeddings, float32 ``(N, dim)`` (a 1-D vector for one string)."""
        single = isinstance(texts, str)
        body = {
            "input": [texts] if single else list(texts),
            "model": model,
            "dimensions": dimensions,
            "input_type": input_type,
            "truncate": truncate,
            "encoding_format": "base64",
        }
        data = self._post("/v1/embeddings", body)["data"]
        out = np.stack([np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in data])
        return out[0] if single else out

    def sparse(
        self, texts: Sequence[str], *, return_tokens: bool = False, input_type: str | None = None
    ) -> list[dict[Any, float]]:
        """Lexical weights per text: ``{token_id: weight}``, or ``{token_string: weight}`` with ``return_tokens``."""
        body = {"input": list(texts), "return_tokens": return_tokens, "input_type": input_type}
        data = self._post("/v1/embeddings/sparse", body)["data"]
        keys = "tokens" if return_tokens else "indices"
        return [dict(zip(d[keys], d["values"])) for d in data]

    def multivector(self, texts: Sequence[str], *, input_type: str | None = None) -> list[np.ndarray]:
        """ColBERT vectors per text, float32 ``(tokens, dim)``."""
        body = {"input": list(texts), "encoding_format": "base64", "input_type": input_type}
        data = self._post("/v1/embeddings/multivector", body)["data"]
        return [np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4").reshape(d["shape"]) for d in data]

    def rerank(
        self, query: str, documents: Sequence[str], *, top_n: int | None = None, model: str | None = None
    ) -> list[tuple[int, float]]:
        """``(document index, score)`` best first."""
        body = {"query": query, "documents": list(documents), "top_n": top_n, "model": model, "return_documents": False}
        return [(r["index"], r["relevance_score"]) for r in self._post("/v1/rerank", body)["results"]]

    def info(self) -> dict[str, Any]:
        """``GET /info``: limits, batching and model configuration."""
        return self._get("/info")

    def health(self) -> bool:
        """True when ``GET /health`` answers ok."""
        return self._get("/health").get("status") == "ok"
