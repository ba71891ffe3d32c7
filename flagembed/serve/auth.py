"""Optional API keys: ``Authorization: Bearer <key>``, compared in constant time, never logged."""

from __future__ import annotations

import hmac
import os
from collections.abc import Iterable

from flagembed.serve.limits import ApiError, ASGIApp, Receive, Scope, Send, send_error

API_KEY_ENV = "FLAGEMBED_API_KEY"


class ApiKeys:
    """The accepted keys; empty means the server is open.

    Keys come from the arguments plus the comma-separated ``FLAGEMBED_API_KEY`` environment variable
    (when ``use_env``). ``repr`` never shows them.
    """

    def __init__(self, keys: Iterable[str] = (), *, use_env: bool = True) -> None:
        found = [k.strip() for k in keys if k and k.strip()]
        if use_env:
            found += [k.strip() for k in os.environ.get(API_KEY_ENV, "").split(",") if k.strip()]
        self._keys = tuple(dict.fromkeys(k.encode("utf-8") for k in found))

    def __bool__(self) -> bool:
        return bool(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:
        return f"ApiKeys(<{len(self._keys)} keys>)"

    def check(self, authorization: str | None) -> None:
        """Accept the request or raise a 401 ``ApiError`` (the message never echoes the key).

        Every configured key is compared (constant time each), so timing does not reveal which matched.
        """
        if not self._keys:
            return
        if not authorization:
            raise ApiError(401, "missing API key: send 'Authorization: Bearer <key>'", code="missing_api_key")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(401, "malformed Authorization header: expected 'Bearer <key>'", code="invalid_api_key")
        given = token.strip().encode("utf-8")
        matched = False
        for key in self._keys:
            matched |= hmac.compare_digest(given, key)
        if not matched:
            raise ApiError(401, "invalid API key", code="invalid_api_key")


OPEN_PATHS = frozenset({"/health", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})


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
        header = dict(scope.get("headers") or []).get(b"authorization")
        try:
            self.keys.check(header.decode("latin-1") if header is not None else None)
        except ApiError as err:
            await send_error(send, err, {"WWW-Authenticate": "Bearer"})
            return
        await self.app(scope, receive, send)
