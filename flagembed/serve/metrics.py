"""Prometheus metrics on a per-app registry: requests, latency, batch sizes, queue depth, tokens."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from flagembed.serve.limits import ASGIApp, Message, Receive, Scope, Send

_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)


class Metrics:
    """The server's metrics; ``render()`` gives the Prometheus text format."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "flagembed_requests", "HTTP requests by route and status.", ["route", "status"], registry=r
        )
        self.latency = Histogram("flagembed_request_seconds", "Request latency by route.", ["route"], registry=r)
        self.batch_requests = Histogram(
            "flagembed_batch_requests", "Requests coalesced per model call.", buckets=_SIZE_BUCKETS, registry=r
        )
        self.batch_items = Histogram(
            "flagembed_batch_items", "Inputs per model call.", buckets=_SIZE_BUCKETS, registry=r
        )
        self.batch_seconds = Histogram("flagembed_batch_seconds", "Model time per coalesced call.", registry=r)
        self.inputs = Counter("flagembed_inputs", "Inputs embedded or scored, by endpoint.", ["endpoint"], registry=r)
        self.tokens = Counter("flagembed_tokens", "Tokens read (truncated), by endpoint.", ["endpoint"], registry=r)
        self.truncated = Counter("flagembed_truncated_inputs", "Inputs cut to the token limit.", registry=r)
        self.queue_depth = Gauge("flagembed_queue_depth", "Requests queued or running in the model.", registry=r)

    def observe_batch(self, requests: int, items: int, seconds: float) -> None:
        """Batcher callback: one coalesced model call finished."""
        self.batch_requests.observe(requests)
        self.batch_items.observe(items)
        self.batch_seconds.observe(seconds)

    def track_depth(self, depth: Callable[[], float]) -> None:
        """Read the queue depth at scrape time."""
        self.queue_depth.set_function(depth)

    def render(self) -> bytes:
        """Prometheus exposition text."""
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Count every HTTP response by route template and status, and time it.

    Responses sent before routing (401 from auth, 413/408 from the body reader) are counted under the
    route the path matches, found in ``routes``; only paths no route matches count as ``unmatched``.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics, routes: Sequence[Any] = ()) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes

    def _route(self, scope: Scope) -> str:
        route = scope.get("route")
        if getattr(route, "path", None):
            return str(route.path)  # type: ignore[union-attr]
        from starlette.routing import Match

        for candidate in self.routes:
            match, _ = candidate.matches(scope)
            if match is not Match.NONE and getattr(candidate, "path", None):
                return str(candidate.path)
        return "unmatched"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = {"code": 500}

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            path = self._route(scope)
            self.metrics.requests.labels(path, str(status["code"])).inc()
            self.metrics.latency.labels(path).observe(time.perf_counter() - start)
