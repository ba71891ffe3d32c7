"""Server limits (payload bytes, inputs, tokens, output size, queue bound, connection timeouts) and the API error."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import asdict, dataclass
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass(frozen=True)
class Limits:
    """What one request may ask for; reported by ``GET /info``.

    Attributes:
        max_payload_bytes: request body size; larger bodies get 413.
        max_inputs: texts (or rerank documents) per request; more get 413.
        max_input_tokens: tokens per input (``None``: the model's max length); longer inputs are
            truncated, or rejected with 413 when the request (or ``truncate``) says not to truncate.
        truncate: the default for requests that do not say.
        max_concurrent_requests: requests queued or running in the model; more get 429 + Retry-After.
        retry_after_s: the Retry-After value sent with 429.
        max_multivector_values: ColBERT output size per request, vectors x dim (one float32 each); a
            request asking for more gets 413, checked from token counts before the model runs.
        max_image_pixels: pixels of one image input (Visualized-BGE models; read from the image header before
            decoding); larger images get 413, undecodable ones 422.
        reject_delay_s: how long a request refused for its content (413, 422) waits for its answer: a
            client that floods the server with refused requests, each sent when the last was answered,
            slows itself down instead of the good clients (0 answers at once).
    """

    max_payload_bytes: int = 2 * 1024 * 1024
    max_inputs: int = 512
    max_input_tokens: int | None = None
    truncate: bool = True
    max_concurrent_requests: int = 256
    retry_after_s: int = 1
    max_multivector_values: int = 2**20
    reject_delay_s: float = 1.0
    max_image_pixels: int = 4096 * 4096

    def __post_init__(self) -> None:
        for name in ("max_payload_bytes", "max_inputs", "max_concurrent_requests", "retry_after_s"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_multivector_values < 1:
            raise ValueError(f"max_multivector_values must be >= 1, got {self.max_multivector_values}")
        if not 0 <= self.reject_delay_s <= 60:
            raise ValueError(f"reject_delay_s must be between 0 and 60, got {self.reject_delay_s}")
        if self.max_input_tokens is not None and self.max_input_tokens < 1:
            raise ValueError(f"max_input_tokens must be >= 1, got {self.max_input_tokens}")

    def as_dict(self) -> dict[str, Any]:
        """Plain dict for ``/info``."""
        return asdict(self)

    def check_inputs(self, count: int, what: str = "input") -> None:
        """Raise 413 when a request carries more than ``max_inputs`` items."""
        if count > self.max_inputs:
            raise ApiError(
                413,
                f"{what} has {count} items; the limit is max_inputs={self.max_inputs} per request",
                param=what,
                code="too_many_inputs",
            )


    def check_multivector(self, values: int, vectors: int, dim: int, partial: bool = False) -> None:
        """Raise 413 when a multi-vector response would hold more than ``max_multivector_values`` floats
        (``partial``: counted from the first inputs only, so the reply would hold at least that many)."""
        if values > self.max_multivector_values:
            what = "at least " if partial else ""
            raise ApiError(
                413,
                f"the response would hold {what}{vectors} vectors x {dim} dims = {values} values; the limit is "
                f"max_multivector_values={self.max_multivector_values} per request (send fewer or shorter inputs)",
                param="input",
                code="output_too_large",
            )


@dataclass(frozen=True)
class ConnectionLimits:
    """Connection-level protection, applied by the HTTP server; reported by ``GET /info``.

    Attributes:
        header_timeout_s: a connection must deliver a request's complete headers within this time after it
            opens (or, on a kept-alive connection, after its first byte); otherwise it is closed.
        body_timeout_s: the whole request body must arrive within this time; otherwise 408 and close.
        keep_alive_s: idle time allowed between requests on one connection.
        max_connections: open connections (and in-flight requests) the server accepts; requests beyond
            get uvicorn's 503 and the connection is closed.
        max_header_bytes: largest request head (request line plus headers); larger gets 400.
        shutdown_grace_s: on SIGTERM/Ctrl-C, how long in-flight requests may finish; the rest get 503.
    """

    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    keep_alive_s: float = 5.0
    max_connections: int = 1024
    max_header_bytes: int = 16 * 1024
    shutdown_grace_s: float = 30.0

    def __post_init__(self) -> None:
        for name in ("header_timeout_s", "body_timeout_s", "keep_alive_s", "shutdown_grace_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0 seconds, got {getattr(self, name)}")
        for name in ("max_connections", "max_header_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    def as_dict(self) -> dict[str, Any]:
        """Plain dict for ``/info``."""
        return asdict(self)


class ApiError(Exception):
    """An error answered with ``status`` and an OpenAI-style JSON body ``{"error": {...}}``."""

    TYPES = {
        401: "authentication_error",
        404: "not_found_error",
        408: "timeout_error",
        429: "rate_limit_error",
        503: "unavailable_error",
    }

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers or {}

    @property
    def type(self) -> str:
        if self.status >= 500:
            return "server_error"
        return self.TYPES.get(self.status, "invalid_request_error")

    def body(self) -> dict[str, Any]:
        """The JSON body."""
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class PayloadLimitMiddleware:
    """Read the whole body first: 413 beyond ``max_bytes`` (Content-Length or streamed), 408 when it takes
    longer than ``timeout_s`` (a slow-body client then loses its connection instead of holding it)."""

    def __init__(self, app: ASGIApp, max_bytes: int, timeout_s: float | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._reject(send, int(declared))
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        deadline = time.monotonic() + self.timeout_s if self.timeout_s else None
        while more:
            try:
                if deadline is None:
                    message = await receive()
                else:
                    message = await asyncio.wait_for(receive(), max(deadline - time.monotonic(), 0.0))
            except asyncio.TimeoutError:
                err = ApiError(
                    408,
                    f"request body not received within body_timeout_s={self.timeout_s:g} ({size} bytes arrived)",
                    code="body_timeout",
                )
                await send_error(send, err, {"Connection": "close"})
                return
            if message["type"] != "http.request":  # client went away
                await self.app(scope, _replay([], message, receive), send)
                return
            body = message.get("body", b"")
            size += len(body)
            if size > self.max_bytes:
                await self._reject(send, size)
                return
            chunks.append(body)
            more = message.get("more_body", False)
        await self.app(scope, _replay(chunks, None, receive), send)

    async def _reject(self, send: Send, size: int) -> None:
        err = ApiError(
            413,
            f"request body is {size} bytes; the limit is max_payload_bytes={self.max_bytes}",
            code="payload_too_large",
        )
        await send_error(send, err)


class ShutdownGuardMiddleware:
    """A request still running when the shutdown grace ends is cancelled by uvicorn: answer it with the
    documented JSON 503 (instead of uvicorn's plain-text 500) when no response has started yet."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except asyncio.CancelledError:
            if started:
                raise
            err = ApiError(503, "server shut down before the request finished; retry it", code="shutting_down")
            await send_error(send, err, {"Connection": "close"})


async def send_error(send: Send, err: ApiError, headers: dict[str, str] | None = None) -> None:
    """Answer an ``ApiError`` straight from ASGI middleware (before routing)."""
    payload = json.dumps(err.body()).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in {**err.headers, **(headers or {})}.items()]
    await send({"type": "http.response.start", "status": err.status, "headers": raw})
    await send({"type": "http.response.body", "body": payload})


def _replay(chunks: list[bytes], final: Message | None, upstream: Receive) -> Receive:
    """A ``receive`` that hands the buffered body over once, then defers to the server's ``receive``."""
    state = {"sent": False}

    async def receive() -> Message:
        if not state["sent"]:
            state["sent"] = True
            if final is not None:
                return final
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        return await upstream()

    return receive
