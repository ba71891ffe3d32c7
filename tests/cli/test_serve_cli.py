"""``flagembed serve``: options reach run_server; bad values fail cleanly."""

from __future__ import annotations

from typing import Any

import pytest
from typer.testing import CliRunner

import flagembed.serve
from flagembed.cli import app


@pytest.fixture()
def captured(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    def fake_run_server(model: str, **kwargs: Any) -> None:
        seen.update(kwargs, model=model)

    monkeypatch.setattr(flagembed.serve, "run_server", fake_run_server)
    monkeypatch.delenv("FLAGEMBED_API_KEY", raising=False)
    return seen


def test_defaults_bind_localhost(captured):
    result = CliRunner().invoke(app, ["serve", "--model", "all-MiniLM-L6-v2"])
    assert result.exit_code == 0, result.output
    assert captured["model"] == "all-MiniLM-L6-v2" and captured["host"] == "127.0.0.1" and captured["port"] == 8000
    assert captured["api_keys"] == [] and captured["cors_origins"] == [] and captured["reranker"] is None
    limits, batching = captured["limits"], captured["batching"]
    assert limits.max_payload_bytes == 2 * 1024 * 1024 and limits.max_inputs == 512 and limits.truncate
    assert batching.enabled and batching.max_batch_items == 256


def test_options_and_env_key(captured, monkeypatch):
    monkeypatch.setenv("FLAGEMBED_API_KEY", "a,b")
    args = [
        "serve", "-m", "m", "--reranker", "r", "--port", "9000", "--no-truncate", "--no-batching",
        "--max-inputs", "7", "--max-concurrent", "3", "--cors-origin", "http://x", "--kind", "m3",
    ]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert captured["api_keys"] == ["a", "b"] and captured["reranker"] == "r" and captured["port"] == 9000
    assert captured["limits"].max_inputs == 7 and captured["limits"].max_concurrent_requests == 3
    assert not captured["limits"].truncate and not captured["batching"].enabled
    assert captured["cors_origins"] == ["http://x"] and captured["kind"] == "m3"
    assert "a,b" not in result.output


def test_bad_limit_fails_cleanly(captured):
    result = CliRunner().invoke(app, ["serve", "-m", "m", "--max-inputs", "0"])
    assert result.exit_code == 2 and "max_inputs must be >= 1" in result.output


def test_help_lists_the_options():
    result = CliRunner().invoke(app, ["serve", "--help"])
    assert result.exit_code == 0 and "--api-key" in result.output and "--reranker" in result.output
