"""HTTP serving: OpenAI-compatible embeddings, rerank, sparse and multi-vector endpoints with dynamic batching."""

try:
    import fastapi  # noqa: F401
    import httpx  # noqa: F401
    import prometheus_client  # noqa: F401
    import uvicorn  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(f'flagembed.serve needs the serve extra: pip install "flagembed[serve]" ({exc})') from exc

from flagembed.serve.app import create_app  # noqa: E402
from flagembed.serve.auth import ApiKeys
from flagembed.serve.backends import ModelHost, load_host
from flagembed.serve.batcher import BatchingConfig, DynamicBatcher
from flagembed.serve.client import FlagEmbedClient, ServeError, openai_client
from flagembed.serve.limits import ApiError, ConnectionLimits, Limits
from flagembed.serve.search import SearchHost, load_search
from flagembed.serve.server import make_server, run_server

__all__ = [
    "ApiError",
    "ApiKeys",
    "BatchingConfig",
    "ConnectionLimits",
    "DynamicBatcher",
    "FlagEmbedClient",
    "Limits",
    "ModelHost",
    "ServeError",
    "create_app",
    "load_host",
    "load_search",
    "SearchHost",
    "make_server",
    "openai_client",
    "run_server",
]
