"""``flagembed serve``: run the HTTP server (localhost by default)."""

from __future__ import annotations

from typing import Optional

import typer

from flagembed.cli.common import Device, DType, TrustRemoteCode, fail


def serve(
    model: str = typer.Option(..., "--model", "-m", help="Embedding model: name, hub id or local folder."),
    reranker: Optional[str] = typer.Option(None, "--reranker", "-r", help="Optional reranker for /v1/rerank."),
    kind: str = typer.Option("auto", help="auto, dense or m3 (m3 adds /v1/embeddings/sparse and /multivector)."),
    served_name: Optional[str] = typer.Option(None, help="Model name clients send (default: the folder name)."),
    host: str = typer.Option("127.0.0.1", help="Address to bind (loopback by default)."),
    port: int = typer.Option(8000, help="Port."),
    api_key: list[str] = typer.Option(
        [], "--api-key", envvar="FLAGEMBED_API_KEY", help="Accepted Bearer key (repeatable; env: comma-separated)."
    ),
    cors_origin: list[str] = typer.Option([], "--cors-origin", help="Allowed CORS origin (repeatable)."),
    max_payload_bytes: int = typer.Option(2 * 1024 * 1024, help="Largest request body (413 beyond)."),
    max_inputs: int = typer.Option(512, help="Texts or documents per request (413 beyond)."),
    max_input_tokens: Optional[int] = typer.Option(None, help="Tokens per input (default: the model's max length)."),
    truncate: bool = typer.Option(True, "--truncate/--no-truncate", help="Cut long inputs (default) or reject them."),
    max_concurrent: int = typer.Option(256, help="Requests queued or running before 429."),
    batching: bool = typer.Option(True, "--batching/--no-batching", help="Coalesce concurrent requests."),
    max_batch_items: int = typer.Option(256, help="Inputs per coalesced model call."),
    max_wait_ms: float = typer.Option(2.0, help="How long to wait for more requests to coalesce."),
    batch_size: int = typer.Option(256, help="Items per forward pass."),
    device: Device = None,
    dtype: DType = "auto",
    log_level: str = typer.Option("info", help="uvicorn log level."),
    trust_remote_code: TrustRemoteCode = False,
) -> None:
    """Serve OpenAI-compatible embeddings (plus rerank, sparse and multi-vector) over HTTP."""
    from flagembed.serve import BatchingConfig, Limits, run_server

    try:
        limits = Limits(max_payload_bytes, max_inputs, max_input_tokens, truncate, max_concurrent)
        batch_cfg = BatchingConfig(batching, max_batch_items, max_wait_ms)
        keys = [k for item in api_key for k in item.split(",")]
        run_server(
            model,
            reranker=reranker,
            kind=kind,  # type: ignore[arg-type]
            served_name=served_name,
            host=host,
            port=port,
            api_keys=keys,
            cors_origins=cors_origin,
            limits=limits,
            batching=batch_cfg,
            device=device,
            dtype=dtype,
            batch_size=batch_size,
            log_level=log_level,
            trust_remote_code=trust_remote_code,
        )
    except (ValueError, TypeError, FileNotFoundError, ImportError) as exc:
        fail(str(exc))
