"""Optional API keys: ``Authorization: Bearer <key>``, compared in constant time, never logged.

Keys must be printable ASCII without spaces (what an HTTP header carries unchanged); an empty or blank key
is refused, because it would silently leave the server open. The header is compared as raw bytes.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Iterable
from pathlib import Path

from flagembed.serve.limits import ApiError, ASGIApp, Receive, Scope, Send, send_error

API_KEY_ENV = "FLAGEMBED_API_KEY"


def check_key(key: str, source: str) -> bytes:
    """One key as header bytes; ``source`` names it in the error.

    Raises:
        TypeError: the key is not a string.
        ValueError: the key is empty or blank, or holds a character outside printable ASCII (spaces included).
    """
    if not isinstance(key, str):
        raise TypeError(f"{source} must be a string, got {type(key).__name__}")
    stripped = key.strip()
    if not stripped:
        raise ValueError(f"{source} is empty; an empty API key would leave the server open (pass a real key or none)")
    bad = next((i for i, c in enumerate(stripped) if not 0x21 <= ord(c) <= 0x7E), None)
    if bad is not None:
        raise ValueError(
            f"{source} has a character outside printable ASCII at position {bad}; "
            "keys must be ASCII without spaces (HTTP headers carry no other text reliably)"
        )
    return stripped.encode("ascii")


def read_key_file(path: str | os.PathLike[str]) -> list[str]:
    """API keys from a file: one per line; blank lines and lines starting with ``#`` are skipped.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file holds no key.
    """
    text = Path(path).read_text(encoding="utf-8")
    keys = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if not keys:
        raise ValueError(f"API key file {path} holds no key (one key per line)")
    return keys


def gather_keys(
    given: Iterable[str] = (), key_file: str | os.PathLike[str] | None = None, *, use_env: bool = True
) -> list[str]:
    """Keys from arguments (each may be comma-separated), a key file and ``FLAGEMBED_API_KEY``, checked.

    Raises:
        ValueError: an empty, blank or non-ASCII key; the message names where it came from.
        FileNotFoundError: ``key_file`` does not exist.
    """
    keys: list[str] = []
    for i, item in enumerate(given):
        keys += [check_key(k, f"--api-key value {i + 1}").decode() for k in item.split(",")]
    if key_file is not None:
        keys += [check_key(k, f"key {i + 1} in {key_file}").decode() for i, k in enumerate(read_key_file(key_file))]
    env = os.environ.get(API_KEY_ENV) if use_env else None
    if env is not None:
        keys += [check_key(k, f"{API_KEY_ENV} item {i + 1}").decode() for i, k in enumerate(env.split(","))]
    return list(dict.fromkeys(keys))


class ApiKeys:
    """The accepted keys; empty means the server is open.

    Keys come from the arguments plus the comma-separated ``FLAGEMBED_API_KEY`` environment variable
    (when ``use_env``). ``repr`` never shows them.

    Raises:
        ValueError: a key is empty/blank or not printable ASCII, or ``FLAGEMBED_API_KEY`` is set but
            holds an empty item (``""``, ``","``).
    """

    def __init__(self, keys: Iterable[str] = (), *, use_env: bool = True) -> None:
        found = [check_key(k, f"API key {i + 1}") for i, k in enumerate(keys)]
        env = os.environ.get(API_KEY_ENV) if use_env else None
        if env is not None:
            found += [check_key(k, f"{API_KEY_ENV} item {i + 1}") for i, k in enumerate(env.split(","))]
        self._keys = tuple(dict.fromkeys(found))

    def __bool__(self) -> bool:
        return bool(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:
        return f"ApiKeys(<{len(self._keys)} keys>)"

    def check(self, authorization: bytes | str | None) -> None:
        """Accept the request or raise a 401 ``ApiError`` (the message never echoes the key).

        Every configured key is compared (constant time each), so timing does not reveal which matched.
        """
        if not self._keys:
            return
        if not authorization:
            raise ApiError(401, "missing API key: send 'Authorization: Bearer <key>'", code="missing_api_key")
        raw = authorization.encode("utf-8") if isinstance(authorization, str) else authorization
        scheme, _, token = raw.partition(b" ")
        if scheme.lower() != b"bearer" or not token.strip():
            raise ApiError(401, "malformed Authorization header: expected 'Bearer <key>'", code="invalid_api_key")
        given = token.strip()
        matched = False
        for key in self._keys:
            matched |= hmac.compare_digest(given, key)
        if not matched:
            raise ApiError(401, "invalid API key", code="invalid_api_key")


OPEN_PATHS = frozenset({"/health"})  # with a key set, /docs, /redoc and /openapi.json need it too


class AuthMiddleware:
    """Check the API key before the body is read, so unauthenticated clients learn nothing from validation."""

    def __init__(self, app: ASGIApp, keys: ApiKeys, open_paths: frozenset[str] = OPEN_PATHS) -> None:
        self.app = app
        self.keys = keys
        self.open_paths = open_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.keys or scope.get("path") in self.open_paths:
            await self.app(scope, receive, send)
            return
        values = [v for k, v in scope.get("headers") or [] if k.lower() == b"authorization"]
        try:
            if len(values) > 1:
                raise ApiError(
                    400, f"{len(values)} Authorization headers; send exactly one", code="duplicate_authorization"
                )
            self.keys.check(values[0] if values else None)
        except ApiError as err:
            await send_error(send, err, {"WWW-Authenticate": "Bearer"} if err.status == 401 else None)
            return
        await self.app(scope, receive, send)
