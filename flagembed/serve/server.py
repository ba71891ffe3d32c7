"""Run the app under uvicorn: localhost by default, graceful shutdown that drains in-flight requests."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable
from typing import Any, Literal

from flagembed.serve.auth import ApiKeys
from flagembed.serve.backends import load_host
from flagembed.serve.batcher import BatchingConfig
from flagembed.serve.limits import Limits

logger = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def make_server(app: Any, host: str = "127.0.0.1", port: int = 8000, **uvicorn_kwargs: Any) -> Any:
    """A ``uvicorn.Server`` for ``app``; ``server.run()`` serves, ``server.should_exit = True`` drains and stops.

    On SIGINT/SIGTERM uvicorn stops accepting connections, lets in-flight requests finish (up to
    ``timeout_graceful_shutdown`` seconds), then the app's lifespan drains the batcher.
    """
    import uvicorn

    uvicorn_kwargs.setdefault("timeout_graceful_shutdown", 30)
    uvicorn_kwargs.setdefault("log_level", "info")
    config = uvicorn.Config(app, host=host, port=port, **uvicorn_kwargs)
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
    device: str | None = None,
    dtype: str = "auto",
    batch_size: int = 256,
    max_tokens_per_batch: int | None = None,
    log_level: str = "info",
    trust_remote_code: bool = False,
) -> None:
    """Load the models and serve them until interrupted (what ``flagembed serve`` runs)."""
    from flagembed.serve.app import create_app

    keys = ApiKeys(api_keys)
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
    )
    app = create_app(models, limits=limits, batching=batching, api_keys=keys, cors_origins=cors_origins)
    logger.info("serving %s (%s) on http://%s:%d (auth: %s)", models.name, models.kind, host, port, bool(keys))
    make_server(app, host, port, log_level=log_level).run()
