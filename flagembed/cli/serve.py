"""``flagembed serve``: run the HTTP server (localhost by default)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from flagembed.cli.common import Device, DType, TrustRemoteCode, fail


def serve(
    model: str = typer.Option(..., "--model", "-m", help="Embedding model: name, hub id or local folder."),
    reranker: Optional[str] = typer.Option(None, "--reranker", "-r", help="Optional reranker for /v1/rerank."),
    index: Optional[Path] = typer.Option(None, "--index", help="Index directory answered on /v1/search."),
    store: Optional[str] = typer.Option(
        None, "--store", help="Milvus collection answered on /v1/search: file.db[#name] or milvus://host:port/name."
    ),
    kind: str = typer.Option("auto", help="auto, dense or m3 (m3 adds /v1/embeddings/sparse and /multivector)."),
    served_name: Optional[str] = typer.Option(None, help="Model name clients send (default: the folder name)."),
    host: str = typer.Option("127.0.0.1", help="Address to bind (loopback by default)."),
    port: int = typer.Option(8000, help="Port (0..65535)."),
    api_key: list[str] = typer.Option(
        [], "--api-key", help="Accepted Bearer key (repeatable, comma-separated). Visible in `ps`: prefer the env/file."
    ),
    api_key_file: Optional[Path] = typer.Option(None, help="File with accepted keys, one per line (# comments)."),
    cors_origin: list[str] = typer.Option([], "--cors-origin", help="Allowed CORS origin (repeatable)."),
    max_payload_bytes: int = typer.Option(2 * 1024 * 1024, help="Largest request body (413 beyond)."),
    max_inputs: int = typer.Option(512, help="Texts or documents per request (413 beyond)."),
    max_input_tokens: Optional[int] = typer.Option(None, help="Tokens per input (default: the model's max length)."),
    max_multivector_values: int = typer.Option(2**20, help="ColBERT vectors x dim per request (413 beyond)."),
    reject_delay: float = typer.Option(
        1.0, min=0, max=60, help="Seconds a request refused for its content (413/422) waits for its answer."
    ),
    truncate: bool = typer.Option(True, "--truncate/--no-truncate", help="Cut long inputs (default) or reject them."),
    max_concurrent: int = typer.Option(256, help="Requests queued or running before 429."),
    batching: bool = typer.Option(True, "--batching/--no-batching", help="Coalesce concurrent requests."),
    max_batch_items: int = typer.Option(256, help="Inputs per coalesced model call."),
    max_wait_ms: float = typer.Option(2.0, help="How long to wait for more requests to coalesce."),
    batch_size: int = typer.Option(256, help="Items per forward pass."),
    task: Optional[str] = typer.Option(
        None, help="LLM-Embedder task: qa, convsearch, chat, lrlm, icl or tool (its query and passage instructions)."
    ),
    header_timeout: float = typer.Option(10.0, help="Seconds a connection may take to send request headers."),
    body_timeout: float = typer.Option(30.0, help="Seconds a request body may take to arrive (408 beyond)."),
    keep_alive: float = typer.Option(5.0, help="Seconds an idle connection stays open between requests."),
    max_connections: int = typer.Option(1024, help="Open connections before uvicorn answers 503."),
    shutdown_grace: float = typer.Option(30.0, help="Seconds in-flight requests may finish on shutdown."),
    device: Device = None,
    dtype: DType = "auto",
    log_level: str = typer.Option("info", help="uvicorn log level."),
    trust_remote_code: TrustRemoteCode = False,
) -> None:
    """Serve OpenAI-compatible embeddings (plus rerank, sparse and multi-vector) over HTTP.

    Keys: --api-key, --api-key-file or FLAGEMBED_API_KEY (comma-separated); an empty key is an error.
    """
    from flagembed.serve import BatchingConfig, ConnectionLimits, Limits, run_server
    from flagembed.serve.auth import gather_keys
    from flagembed.serve.server import check_port

    try:  # everything is checked before a model is loaded
        check_port(port)
        if index is not None and store is not None:
            raise ValueError("give --index or --store, not both")
        if index is not None and not (index / "manifest.json").is_file():
            raise ValueError(f"--index {index} is not an index directory (no manifest.json)")
        if store is not None:
            from flagembed.index.milvus import parse_store

            parse_store(store)
        keys = gather_keys(api_key, api_key_file)
        limits = Limits(
            max_payload_bytes, max_inputs, max_input_tokens, truncate, max_concurrent,
            max_multivector_values=max_multivector_values,
            reject_delay_s=reject_delay,
        )  # fmt: skip
        batch_cfg = BatchingConfig(batching, max_batch_items, max_wait_ms)
        conn = ConnectionLimits(
            header_timeout, body_timeout, keep_alive, max_connections, shutdown_grace_s=shutdown_grace
        )
    except (ValueError, TypeError, OSError) as exc:
        fail(str(exc))
    try:
        run_server(
            model,
            reranker=reranker,
            index=str(index) if index is not None else None,
            store=store,
            kind=kind,  # type: ignore[arg-type]
            served_name=served_name,
            host=host,
            port=port,
            api_keys=keys,
            cors_origins=cors_origin,
            limits=limits,
            batching=batch_cfg,
            connections=conn,
            device=device,
            dtype=dtype,
            batch_size=batch_size,
            log_level=log_level,
            trust_remote_code=trust_remote_code,
            task=task,
        )
    except (ValueError, TypeError, FileNotFoundError, ImportError) as exc:
        fail(str(exc))
