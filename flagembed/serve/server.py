"""Run the app under uvicorn: localhost by default, connection timeouts, graceful shutdown that drains."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
from collections.abc import Iterable
from typing import Any, Literal

from flagembed.serve.auth import ApiKeys
from flagembed.serve.backends import load_host
from flagembed.serve.batcher import BatchingConfig
from flagembed.serve.limits import ConnectionLimits, Limits

logger = logging.getLogger(__name__)

# Query parameters whose values must never reach a log line (a client may put its key in the URL).
_SECRET_QUERY = re.compile(r"(?i)([?&][^=&#\s]*(?:key|token|secret|passw|auth|sig)[^=&#\s]*=)[^&#\s]*")


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_port(port: int) -> int:
    """``port`` if it is a TCP port (0 picks a free one).

    Raises:
        ValueError: outside 0..65535.
    """
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        raise ValueError(f"--port must be in 0..65535, got {port}")
    return port


def redact_query(text: str) -> str:
    """``text`` with the values of key-like query parameters (``api_key=``, ``token=``, ...) replaced."""
    return _SECRET_QUERY.sub(r"\1[redacted]", text)


class RedactSecretsFilter(logging.Filter):
    """Redact key-like query parameters in uvicorn's access-log arguments (the request target)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact_query(a) if isinstance(a, str) and "=" in a else a for a in record.args)
        return True


def install_log_redaction() -> None:
    """Add :class:`RedactSecretsFilter` to ``uvicorn.access`` (once)."""
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, RedactSecretsFilter) for f in access.filters):
        access.addFilter(RedactSecretsFilter())


def header_timeout_protocol(header_timeout_s: float) -> type[asyncio.Protocol]:
    """uvicorn's h11 protocol plus a deadline for each request head.

    A connection must deliver complete request headers within ``header_timeout_s`` of opening (or, between
    kept-alive requests, of the next request's first byte); otherwise it is closed. uvicorn alone holds idle
    and slow-header connections forever (its keep-alive timer only starts after a response).
    """
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderTimeoutProtocol(H11Protocol):
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm_header_timer()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.conn.their_state is h11.IDLE:  # waiting for (the rest of) a request head
                self._arm_header_timer()
            else:
                self._cancel_header_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel_header_timer()
            super().connection_lost(exc)

        def _arm_header_timer(self) -> None:
            if self._header_timer is None and not self.transport.is_closing():
                self._header_timer = self.loop.call_later(header_timeout_s, self._header_timed_out)

        def _cancel_header_timer(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _header_timed_out(self) -> None:
            self._header_timer = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self.transport.close()

    HeaderTimeoutProtocol.__name__ = HeaderTimeoutProtocol.__qualname__ = "HeaderTimeoutProtocol"
    return HeaderTimeoutProtocol


def make_server(
    app: Any,
    host: str = "127.0.0.1",
    port: int = 8000,
    connections: ConnectionLimits | None = None,
    **uvicorn_kwargs: Any,
) -> Any:
    """A ``uvicorn.Server`` for ``app``; ``server.run()`` serves, ``server.should_exit = True`` drains and stops.

    ``connections`` (default: the app's, else :class:`ConnectionLimits`) sets the header deadline, keep-alive,
    connection cap, header size and shutdown grace; the app enforces the body deadline. On SIGINT/SIGTERM
    uvicorn stops accepting connections, lets in-flight requests finish (``shutdown_grace_s``; those still
    running then get a JSON 503), then the app's lifespan drains the batcher. Key-like query parameters are
    redacted from the access log.
    """
    import uvicorn

    state = getattr(getattr(app, "state", None), "flagembed", None)
    conn = connections or getattr(state, "connections", None) or ConnectionLimits()
    uvicorn_kwargs.setdefault("timeout_graceful_shutdown", conn.shutdown_grace_s)
    uvicorn_kwargs.setdefault("timeout_keep_alive", conn.keep_alive_s)
    uvicorn_kwargs.setdefault("limit_concurrency", conn.max_connections)
    uvicorn_kwargs.setdefault("h11_max_incomplete_event_size", conn.max_header_bytes)
    uvicorn_kwargs.setdefault("http", header_timeout_protocol(conn.header_timeout_s))
    uvicorn_kwargs.setdefault("log_level", "info")
    config = uvicorn.Config(app, host=host, port=check_port(port), **uvicorn_kwargs)
    install_log_redaction()
    return uvicorn.Server(config)


def run_server(
    model: str,
    *,
    reranker: str | None = None,
    kind: Literal["auto", "dense", "m3"] = "auto",
    served_name: str | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_keys: Iterable[str] = (),
    cors_origins: Iterable[str] = (),
    limits: Limits | None = None,
    batching: BatchingConfig | None = None,
    connections: ConnectionLimits | None = None,
    device: str | None = None,
    dtype: str = "auto",
    batch_size: int = 256,
    max_tokens_per_batch: int | None = None,
    log_level: str = "info",
    trust_remote_code: bool = False,
    task: str | None = None,
    index: str | None = None,
    store: str | None = None,
) -> None:
    """Load the models and serve them until interrupted (what ``flagembed serve`` runs).

    Raises:
        ValueError: a bad port or API key (checked before any model is loaded).
    """
    from flagembed.serve.app import create_app
    from flagembed.serve.search import load_search

    check_port(port)
    keys = ApiKeys(api_keys)
    connections = connections or ConnectionLimits()
    if not keys and not is_loopback(host):
        logger.warning("serving on %s without an API key: anyone who can reach it can use it", host)
    models = load_host(
        model,
        reranker=reranker,
        kind=kind,
        served_name=served_name,
        device=device,
        dtype=dtype,
        batch_size=batch_size,
        max_tokens_per_batch=max_tokens_per_batch,
        trust_remote_code=trust_remote_code,
        task=task,
    )
    search = load_search(index, store, device=device, trust_remote_code=trust_remote_code)
    app = create_app(
        models,
        search=search,
        limits=limits,
        batching=batching,
        api_keys=keys,
        cors_origins=cors_origins,
        connections=connections,
        drain_timeout_s=connections.shutdown_grace_s,
    )
    logger.info("serving %s (%s) on http://%s:%d (auth: %s)", models.name, models.kind, host, port, bool(keys))
    make_server(app, host, port, connections, log_level=log_level).run()
