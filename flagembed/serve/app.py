"""The FastAPI app: one short handler per route, one error mapper, dynamic batching behind every model call."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
import uuid
from collections.abc import AsyncIterator, Callable, Hashable, Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from flagembed.engine import OutOfMemoryOnItemError
from flagembed.serve import schemas as s
from flagembed.serve.auth import ApiKeys, AuthMiddleware
from flagembed.serve.backends import ModelHost, RunFn
from flagembed.serve.batcher import BatcherClosedError, BatchingConfig, DynamicBatcher, QueueFullError
from flagembed.serve.images import has_image_parts, parse_image_inputs
from flagembed.serve.limits import (
    ApiError,
    ConnectionLimits,
    Limits,
    PayloadLimitMiddleware,
    ShutdownGuardMiddleware,
)
from flagembed.serve.metrics import Metrics, MetricsMiddleware
from flagembed.serve.search import SearchHost

logger = logging.getLogger(__name__)

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": s.ErrorResponse} for code in (400, 401, 404, 408, 413, 422, 429, 500, 503)
}
INLINE_TOKENIZE = 8  # requests with at most this many texts are tokenized on the event loop (cheaper than a thread)
_WORD = re.compile(r"\S*\w\S*")  # a whitespace-separated word with a letter, digit or _: at least one token


@dataclass
class ServerState:
    """Everything the handlers share."""

    host: ModelHost
    limits: Limits
    batcher: DynamicBatcher
    metrics: Metrics
    keys: ApiKeys
    cors_origins: tuple[str, ...] = ()
    drain_timeout_s: float = 30.0
    connections: ConnectionLimits = ConnectionLimits()
    search: SearchHost | None = None
    # Large requests are tokenized here, one at a time and in arrival order, so a flood of big requests
    # occupies one thread (and about one core) instead of every thread of the shared pool.
    tokenize_pool: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="flagembed-tokenize")
    )

    async def tokenize(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run a tokenizer-bound call for a large request on :attr:`tokenize_pool`."""
        return await asyncio.get_running_loop().run_in_executor(self.tokenize_pool, fn, *args)


@dataclass
class Prepared:
    """A text request after limits, instructions and token counting."""

    name: str
    texts: list[str]
    max_length: int
    tokens: int
    truncated: int


def create_app(
    host: ModelHost,
    *,
    limits: Limits | None = None,
    batching: BatchingConfig | None = None,
    api_keys: ApiKeys | Iterable[str] | None = None,
    cors_origins: Iterable[str] = (),
    drain_timeout_s: float = 30.0,
    connections: ConnectionLimits | None = None,
    search: SearchHost | None = None,
) -> FastAPI:
    """Build the app around loaded models; the batcher starts and drains with the app's lifespan.

    Args:
        host: the models (see :func:`flagembed.serve.load_host`).
        limits: request limits; ``limits.max_concurrent_requests`` bounds the batcher queue.
        batching: how requests are coalesced (``enabled=False`` runs each request alone).
        api_keys: accepted Bearer keys (plus ``FLAGEMBED_API_KEY``); none means open.
        cors_origins: allowed browser origins; CORS is off when empty.
        drain_timeout_s: how long shutdown waits for queued requests.
        connections: connection timeouts and caps; the app enforces the body timeout and reports all
            of them in ``/info``, :func:`flagembed.serve.make_server` applies the rest.
        search: an index or Milvus store answered on ``POST /v1/search`` (see :func:`flagembed.serve.load_search`).
    """
    limits = limits or Limits()
    connections = connections or ConnectionLimits()
    keys = api_keys if isinstance(api_keys, ApiKeys) else ApiKeys(api_keys or ())
    metrics = Metrics()
    cfg = replace(batching or BatchingConfig(), max_pending=limits.max_concurrent_requests)
    batcher = DynamicBatcher(cfg, on_batch=metrics.observe_batch)
    metrics.track_depth(lambda: batcher.depth)
    state = ServerState(
        host, limits, batcher, metrics, keys, tuple(cors_origins), drain_timeout_s, connections, search=search
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        batcher.start()
        yield
        await run_in_threadpool(batcher.close, drain_timeout_s)
        state.tokenize_pool.shutdown(wait=False, cancel_futures=True)
        if search is not None:
            search.close()

    from flagembed import __version__

    app = FastAPI(
        title="flagembed",
        version=__version__,
        description="OpenAI-compatible embeddings, rerank, sparse and multi-vector endpoints.",
        lifespan=lifespan,
    )  # with an API key set, /docs, /redoc and /openapi.json need it too (auth.OPEN_PATHS)
    app.state.flagembed = state
    _add_routes(app, state)
    for exc_type in (ApiError, RequestValidationError, StarletteHTTPException, Exception):
        app.add_exception_handler(exc_type, _error_response)  # type: ignore[arg-type]
    app.add_middleware(PayloadLimitMiddleware, max_bytes=limits.max_payload_bytes, timeout_s=connections.body_timeout_s)
    app.add_middleware(AuthMiddleware, keys=keys)
    app.add_middleware(ShutdownGuardMiddleware)
    app.add_middleware(MetricsMiddleware, metrics=metrics, routes=app.router.routes)
    if state.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(state.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )
    return app


def _add_routes(app: FastAPI, st: ServerState) -> None:
    host = st.host

    @app.post("/v1/embeddings", response_model=s.EmbeddingResponse, responses=ERRORS)
    async def embeddings(req: s.EmbeddingRequest) -> Response:
        """Dense embeddings (OpenAI schema); ``dimensions`` keeps the first N (Matryoshka)."""
        if has_image_parts(req.input):
            return await _image_embeddings(st, req)
        prep = await _prepare(st, req, "embeddings")
        dims = _check_dimensions(host, req.dimensions)
        vecs = await _submit(st, ("dense", prep.max_length, dims), prep.texts, host.dense_task(prep.max_length, dims))
        fmt = req.encoding_format
        data = [{"object": "embedding", "index": i, "embedding": _vector(v, fmt)} for i, v in enumerate(vecs)]
        return _list_response(data, prep)

    @app.post("/v1/embeddings/sparse", response_model=s.SparseResponse, responses=ERRORS)
    async def sparse(req: s.SparseRequest) -> Response:
        """Lexical weights (BGE-M3 sparse output) as token ids and weights, optionally token strings."""
        prep = await _prepare(st, req, "sparse", needs_m3=True)
        out = await _submit(st, ("sparse", prep.max_length), prep.texts, host.sparse_task(prep.max_length))
        data = []
        for i, (ids, vals) in enumerate(out):
            item = {"object": "sparse_embedding", "index": i, "indices": ids.tolist(), "values": vals.tolist()}
            if req.return_tokens:
                item["tokens"] = host.decode_tokens(item["indices"])
            data.append(item)
        return _list_response(data, prep)

    @app.post("/v1/embeddings/multivector", response_model=s.MultiVectorResponse, responses=ERRORS)
    async def multivector(req: s.MultiVectorRequest) -> Response:
        """ColBERT vectors (BGE-M3 multi-vector output), one per token."""
        prep = await _prepare(st, req, "multivector", needs_m3=True, vector_dim=host.multivector_dim)
        out = await _submit(st, ("colbert", prep.max_length), prep.texts, host.multivector_task(prep.max_length))
        vectors = sum(int(m.shape[0]) for m in out)
        st.limits.check_multivector(sum(int(m.size) for m in out), vectors, int(out[0].shape[1]) if out else 0)
        body = await run_in_threadpool(_multivector_body, out, req.encoding_format, prep)  # the loop keeps serving
        return Response(body, media_type="application/json")

    @app.post("/v1/rerank", response_model=s.RerankResponse, responses=ERRORS)
    async def rerank(req: s.RerankRequest) -> Response:
        """Score documents against a query (Cohere/Jina schema), best first."""
        name = host.resolve(req.model, reranker=True)
        st.limits.check_inputs(len(req.documents), "documents")
        docs = req.texts()
        scores = np.asarray(await _submit(st, ("rerank",), [(req.query, d) for d in docs], host.rerank_task()))
        order = np.argsort(-scores, kind="stable")[: req.top_n]
        results = [{"index": int(i), "relevance_score": float(scores[i])} for i in order]
        if req.return_documents:
            for r in results:
                r["document"] = req.returned(r["index"])
        tokens = host.count_rerank_tokens(req.query, docs)
        st.metrics.inputs.labels("rerank").inc(len(docs))
        st.metrics.tokens.labels("rerank").inc(tokens)
        body = {"id": uuid.uuid4().hex, "model": name, "results": results, "usage": {"total_tokens": tokens}}
        return JSONResponse(body)

    @app.post("/v1/search", responses=ERRORS)
    async def search(req: s.SearchRequest) -> Response:
        """Top-k documents per query from the served index or Milvus store (ranked as ``flagembed search``)."""
        if st.search is None:
            raise ApiError(404, "this server has no index: start it with --index DIR or --store STORE")
        try:
            queries = req.queries()
        except ValueError as exc:
            raise ApiError(422, str(exc), param="query") from exc
        st.limits.check_inputs(len(queries), "query")
        res = await run_in_threadpool(st.search.search, queries, req.top_k, req.modes, req.weights, req.fusion,
                                      req.filter)  # fmt: skip
        data = []
        for qi, (ids, scores) in enumerate(zip(res.ids, res.scores)):
            hits = [{"id": d, "score": float(v)} for d, v in zip(ids, scores)]
            if req.return_documents and res.docs is not None:
                for hit, doc in zip(hits, res.docs[qi]):
                    hit["document"] = doc
            data.append({"object": "search_result", "index": qi, "results": hits})
        st.metrics.inputs.labels("search").inc(len(queries))
        return JSONResponse({"object": "list", "data": data, "index": st.search.info()})

    @app.get("/v1/models", response_model=s.ModelList, responses=ERRORS)
    async def models() -> dict[str, Any]:
        """The served model names."""
        names = [host.name] + ([host.reranker_name] if host.reranker is not None else [])
        return {"object": "list", "data": [{"id": n, "object": "model", "created": host.created} for n in names]}

    @app.get("/health")
    async def health() -> dict[str, str]:
        """Liveness (no API key needed)."""
        return {"status": "ok"}

    @app.get("/info", responses=ERRORS)
    async def info() -> dict[str, Any]:
        """Limits, batching and model configuration."""
        from flagembed import __version__

        return {
            "version": __version__,
            "model": host.info(),
            "limits": {**st.limits.as_dict(), "max_input_tokens": _token_limit(st, None)},
            "batching": asdict(st.batcher.config),
            "batch_stats": asdict(st.batcher.stats),
            "connections": st.connections.as_dict(),
            "auth": bool(st.keys),
            "cors_origins": list(st.cors_origins),
            "search": st.search.info() if st.search is not None else None,
        }

    @app.get("/metrics", responses=ERRORS)
    async def metrics() -> Response:
        """Prometheus metrics."""
        return Response(st.metrics.render(), media_type=st.metrics.content_type)


# ---------------------------------------------------------------------- helpers used by the handlers
def _token_limit(st: ServerState, input_type: str | None) -> int:
    model_max = st.host.max_length(input_type)
    cap = st.limits.max_input_tokens
    return min(model_max, cap) if cap else model_max


async def _prepare(
    st: ServerState, req: Any, endpoint: str, needs_m3: bool = False, vector_dim: int | None = None
) -> Prepared:
    """Resolve the model, check the input count, apply instructions, count tokens and enforce the token limit.

    With ``vector_dim`` (multi-vector output of that size per token), the output bound is checked first,
    reading texts a few at a time so that a request far over the bound is refused after a few texts.
    """
    name = st.host.resolve(req.model)
    if needs_m3 and st.host.kind != "m3":
        raise ApiError(
            422, f"model {name!r} is a dense embedder; {endpoint} outputs need an M3-style model", code="unsupported"
        )
    texts = req.texts()
    st.limits.check_inputs(len(texts))
    texts = st.host.format_inputs(texts, req.input_type)
    limit = _token_limit(st, req.input_type)
    if vector_dim and len(texts) * (limit - 1) * vector_dim > st.limits.max_multivector_values:
        _check_vector_floor(st, texts, limit, vector_dim)
        if len(texts) <= INLINE_TOKENIZE:
            _check_vector_budget(st, texts, limit, vector_dim)
        else:
            await st.tokenize(_check_vector_budget, st, texts, limit, vector_dim)
    if len(texts) <= INLINE_TOKENIZE:
        tok = st.host.count_tokens(texts, limit)
    else:
        tok = await st.tokenize(st.host.count_tokens, texts, limit)
    truncate = st.limits.truncate if req.truncate is None else req.truncate
    if not truncate and tok.num_truncated:
        i = int(np.flatnonzero(tok.truncated)[0])
        raise ApiError(
            413,
            f"input[{i}] has more than {limit} tokens; the limit is max_input_tokens={limit} "
            "(send truncate=true to cut inputs instead)",
            param="input",
            code="input_too_long",
        )
    st.metrics.inputs.labels(endpoint).inc(len(texts))
    st.metrics.tokens.labels(endpoint).inc(tok.num_tokens)
    st.metrics.truncated.inc(tok.num_truncated)
    return Prepared(name, texts, limit, tok.num_tokens, tok.num_truncated)


async def _image_embeddings(st: ServerState, req: s.EmbeddingRequest) -> Response:
    """``/v1/embeddings`` with image content parts: decoded and checked here, embedded through the batcher."""
    name = st.host.resolve(req.model)
    encode_items = getattr(st.host.model, "encode_items", None)
    if encode_items is None:
        raise ApiError(422, f"model {name!r} takes text only; image inputs need a Visualized-BGE model",
                       param="input", code="unsupported")  # fmt: skip
    raw = list(req.input)  # type: ignore[arg-type]
    st.limits.check_inputs(len(raw))
    items, images = parse_image_inputs(raw, max_image_pixels=st.limits.max_image_pixels)
    dims = _check_dimensions(st.host, req.dimensions)
    texts = [x if isinstance(x, str) else x["text"] for x in items]
    limit = _token_limit(st, None)
    tok = st.host.count_tokens(texts, limit)
    tokens = tok.num_tokens + images * int(getattr(st.host.model, "num_image_tokens", 0))
    kw = {"truncate_dim": dims} if dims is not None else {}

    def run(batch: list[Any]) -> Any:
        return encode_items(batch, show_progress=False, **kw)

    vecs = await _submit(st, ("visual", dims), items, run)
    st.metrics.inputs.labels("embeddings").inc(len(items))
    st.metrics.tokens.labels("embeddings").inc(tokens)
    fmt = req.encoding_format
    data = [{"object": "embedding", "index": i, "embedding": _vector(v, fmt)} for i, v in enumerate(vecs)]
    return _list_response(data, Prepared(name, texts, limit, tokens, tok.num_truncated))


def _check_vector_floor(st: ServerState, texts: list[str], max_length: int, dim: int) -> None:
    """413 from a floor that needs no tokenizer: every whitespace-separated word holding a letter or digit
    is at least one token (tokenizers split at whitespace; normalizers never drop letters or digits), so a
    text gives at least ``min(words, max_length - 1) - 1`` vectors. Stops as soon as the floor overflows."""
    budget = st.limits.max_multivector_values // dim
    vectors = 0
    for i, text in enumerate(texts):
        words = 0
        for _ in _WORD.finditer(text):
            words += 1
            if words >= max_length - 1:
                break
        vectors += max(min(words, max_length - 1) - 1, 0)
        if vectors > budget:
            st.limits.check_multivector(vectors * dim, vectors, dim, partial=i + 1 < len(texts))


def _check_vector_budget(st: ServerState, texts: list[str], max_length: int, dim: int) -> None:
    """413 as soon as the texts read so far would give more than ``max_multivector_values`` floats.

    M3 returns one vector per token but the first ([CLS]). The first chunk is the fewest full-length texts
    that would overflow, later chunks double: a request far over the bound costs one small tokenizer call,
    a fitting one its own (bounded) tokens once more.
    """
    budget = st.limits.max_multivector_values // dim
    vectors, start, chunk = 0, 0, max(INLINE_TOKENIZE, budget // max(max_length - 1, 1) + 1)
    while start < len(texts):
        lengths = st.host.token_lengths(texts[start : start + chunk], max_length)
        vectors += sum(max(n - 1, 0) for n in lengths)
        st.limits.check_multivector(vectors * dim, vectors, dim, partial=start + chunk < len(texts))
        start, chunk = start + chunk, chunk * 2


def _check_dimensions(host: ModelHost, dims: int | None) -> int | None:
    if dims is None:
        return None
    if not host.supports_dimensions:
        raise ApiError(422, f"model {host.name!r} does not support 'dimensions'", param="dimensions")
    if host.dim is not None and dims > host.dim:
        raise ApiError(
            422, f"dimensions={dims} is larger than the model's {host.dim}; valid: 1..{host.dim}", param="dimensions"
        )
    return None if dims == host.dim else dims


async def _submit(st: ServerState, key: Hashable, items: list[Any], run: RunFn) -> list[Any]:
    """Run through the batcher; map queue and model failures to API errors."""
    try:
        return await st.batcher.run(key, items, run)
    except QueueFullError as exc:
        raise ApiError(429, str(exc), code="queue_full", headers={"Retry-After": str(st.limits.retry_after_s)}) from exc
    except BatcherClosedError as exc:
        raise ApiError(503, str(exc), code="shutting_down") from exc
    except (ValueError, TypeError) as exc:
        raise ApiError(422, f"model rejected the input: {exc}") from exc
    except OutOfMemoryOnItemError as exc:
        raise ApiError(413, str(exc), code="out_of_memory") from exc
    except Exception as exc:
        logger.exception("model call failed")
        raise ApiError(500, f"model call failed: {type(exc).__name__}: {exc}") from exc


def _vector(v: np.ndarray, encoding_format: str) -> Any:
    """Floats as a list, or base64 of little-endian float32 (what the openai client decodes)."""
    if encoding_format == "base64":
        return base64.b64encode(np.ascontiguousarray(v, dtype="<f4").tobytes()).decode("ascii")
    return np.asarray(v, dtype=np.float32).tolist()


def _list_response(data: list[dict[str, Any]], prep: Prepared) -> JSONResponse:
    usage = {"prompt_tokens": prep.tokens, "total_tokens": prep.tokens}
    body = {"object": "list", "data": data, "model": prep.name, "usage": usage, "truncated": prep.truncated}
    return JSONResponse(body)


def _multivector_body(out: list[np.ndarray], encoding_format: str, prep: Prepared) -> bytes:
    """The JSON body built a row at a time: Python float lists exist for one vector at most (not the whole
    reply), and the GIL is released between rows, so other requests keep flowing while a big reply is built."""
    parts = [b'{"object":"list","data":[']
    for i in range(len(out)):
        m, out[i] = out[i], None  # type: ignore[call-overload]
        head = f'{"," if i else ""}{{"object":"multivector_embedding","index":{i},"shape":[{m.shape[0]},{m.shape[1]}]'
        if encoding_format == "base64":
            parts.append(f'{head},"embedding":"{_vector(m, "base64")}"}}'.encode())
            continue
        rows = (json.dumps(row.tolist(), allow_nan=False, separators=(",", ":")).encode() for row in m)
        parts.append(f'{head},"embedding":['.encode() + b",".join(rows) + b"]}")
    usage = {"prompt_tokens": prep.tokens, "total_tokens": prep.tokens}
    tail = {"model": prep.name, "usage": usage, "truncated": prep.truncated}
    parts.append(b"]," + json.dumps(tail, ensure_ascii=False, separators=(",", ":")).encode()[1:])
    return b"".join(parts)


def _parse_error(exc: StarletteHTTPException) -> ApiError | None:
    """FastAPI answers 400 when the body is JSON Python cannot decode; the documented answer is 422."""
    cause = exc.__cause__
    if exc.status_code != 400 or cause is None:
        return None
    if isinstance(cause, UnicodeDecodeError):
        msg = f"body is not valid UTF-8 (byte {cause.start}): send JSON text"
    elif isinstance(cause, RecursionError):
        msg = "body is nested too deeply to parse"
    elif isinstance(cause, ValueError):  # e.g. an integer over Python's 4300-digit limit
        msg = f"body is not valid JSON ({cause})"
    else:
        return None
    return ApiError(422, msg, param="body", code="invalid_json")


async def _error_response(request: Request, exc: Exception) -> JSONResponse:
    """The one error mapper: every failure becomes ``{"error": {...}}`` with the right status.

    Requests refused for their content (413, 422) are answered after ``Limits.reject_delay_s``: the
    wait costs the server nothing, and a client flooding it with such requests slows itself down.
    """
    if isinstance(exc, RequestValidationError):
        err = ApiError(422, _validation_message(exc.errors()), param=_first_param(exc.errors()))
    elif isinstance(exc, StarletteHTTPException) and (parsed := _parse_error(exc)) is not None:
        err = parsed
    elif isinstance(exc, StarletteHTTPException):
        err = ApiError(exc.status_code, str(exc.detail), headers=dict(exc.headers or {}))
    elif isinstance(exc, ApiError):
        err = exc
    else:  # anything unexpected (Starlette logs the traceback once): JSON, not a text page
        err = ApiError(500, f"internal error: {type(exc).__name__}")
    state = getattr(request.app.state, "flagembed", None)
    if err.status in (413, 422) and state is not None and state.limits.reject_delay_s > 0:
        await asyncio.sleep(state.limits.reject_delay_s)
    return JSONResponse(err.body(), status_code=err.status, headers=err.headers)


def _loc(error: dict[str, Any]) -> str:
    parts = [str(p) for p in error.get("loc", ()) if p != "body"]
    return ".".join(parts) or "body"


def _first_param(errors: Any) -> str | None:
    return _loc(errors[0]) if errors else None


def _validation_message(errors: Any) -> str:
    msgs: list[str] = []
    for e in list(errors)[:3]:
        msg = str(e.get("msg", "invalid value")).removeprefix("Value error, ")
        if e.get("type") == "json_invalid":
            msg = f"body is not valid JSON ({e.get('ctx', {}).get('error', msg)})"
        text = f"{_loc(e)}: {msg}"
        if text not in msgs:
            msgs.append(text)
    return "; ".join(msgs) or "invalid request"
