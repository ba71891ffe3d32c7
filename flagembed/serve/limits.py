"""Server limits (payload bytes, inputs per request, tokens per input, queue bound) and the API error type."""

from __future__ import annotations

import json
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
    """

    max_payload_bytes: int = 2 * 1024 * 1024
    max_inputs: int = 512
    max_input_tokens: int | None = None
    truncate: bool = True
    max_concurrent_requests: int = 256
    retry_after_s: int = 1

    def __post_init__(self) -> None:
        for name in ("max_payload_bytes", "max_inputs", "max_concurrent_requests", "retry_after_s"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
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


class ApiError(Exception):
    """An error answered with ``status`` and an OpenAI-style JSON body ``{"error": {...}}``."""

    TYPES = {401: "authentication_error", 404: "not_found_error", 429: "rate_limit_error", 503: "unavailable_error"}

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
    """Answer 413 to bodies over ``max_bytes`` before the app parses them (Content-Length or streamed)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

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
        while more:
            message = await receive()
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
