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


@pytest.mark.parametrize(
    ("args", "env", "needle"),
    [
        (["--api-key", ""], None, "--api-key value 1 is empty"),
        (["--api-key", "  "], None, "is empty"),
        (["--api-key", ","], None, "is empty"),
        (["--api-key", "ok,"], None, "is empty"),
        (["--api-key", "clé"], None, "printable ASCII"),
        ([], "", "FLAGEMBED_API_KEY item 1 is empty"),
        ([], ",", "FLAGEMBED_API_KEY item 1 is empty"),
        (["--port", "99999"], None, "--port must be in 0..65535, got 99999"),
        (["--port", "-1"], None, "--port must be in 0..65535"),
        (["--header-timeout", "0"], None, "header_timeout_s must be > 0"),
    ],
)
def test_bad_keys_and_ports_fail_in_one_line_before_loading(captured, monkeypatch, args, env, needle):
    if env is not None:
        monkeypatch.setenv("FLAGEMBED_API_KEY", env)
    result = CliRunner().invoke(app, ["serve", "-m", "m", *args])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], result.output
    assert "model" not in captured  # run_server (which loads the model) was never called


def test_key_file_and_limits_reach_run_server(captured, tmp_path):
    keys = tmp_path / "keys.txt"
    keys.write_text("# serving keys\nsk-one\n\n  sk-two  \n")
    args = [
        "serve", "-m", "m", "--api-key-file", str(keys), "--api-key", "sk-three", "--max-multivector-values", "99",
        "--header-timeout", "3", "--body-timeout", "4", "--keep-alive", "2", "--max-connections", "50",
        "--shutdown-grace", "7",
    ]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert captured["api_keys"] == ["sk-three", "sk-one", "sk-two"] and "sk-one" not in result.output
    assert captured["limits"].max_multivector_values == 99
    conn = captured["connections"]
    assert (conn.header_timeout_s, conn.body_timeout_s, conn.keep_alive_s) == (3, 4, 2)
    assert conn.max_connections == 50 and conn.shutdown_grace_s == 7
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n\n")
    result = CliRunner().invoke(app, ["serve", "-m", "m", "--api-key-file", str(empty)])
    assert result.exit_code == 2 and "holds no key" in result.output
    result = CliRunner().invoke(app, ["serve", "-m", "m", "--api-key-file", str(tmp_path / "missing")])
    assert result.exit_code == 2 and "missing" in result.output


def test_run_server_checks_port_and_keys_before_loading(monkeypatch):
    from flagembed.serve import server

    monkeypatch.delenv("FLAGEMBED_API_KEY", raising=False)
    monkeypatch.setattr(server, "load_host", lambda *a, **k: pytest.fail("model loaded"))
    with pytest.raises(ValueError, match="--port must be in 0..65535"):
        server.run_server("m", port=70000)
    with pytest.raises(ValueError, match="empty"):
        server.run_server("m", api_keys=[""])


def test_index_and_store_reach_run_server_and_are_checked_first(captured, tmp_path):
    idx = tmp_path / "idx"
    idx.mkdir()
    (idx / "manifest.json").write_text("{}")
    result = CliRunner().invoke(app, ["serve", "-m", "m", "--index", str(idx)])
    assert result.exit_code == 0, result.output
    assert captured["index"] == str(idx) and captured["store"] is None
    captured.clear()
    for args, needle in [
        (["--index", str(tmp_path)], "is not an index directory"),
        (["--index", str(idx), "--store", "x.db"], "not both"),
    ]:
        result = CliRunner().invoke(app, ["serve", "-m", "m", *args])
        assert result.exit_code != 0 and needle in result.output, result.output
        assert not captured  # refused before any model is loaded
