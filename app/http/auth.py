"""The API token, checked from the headers before anything reads the request body."""

from __future__ import annotations

import secrets

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from app.http._reply import reply

__all__ = ["TokenGate", "TOKEN_MESSAGE"]

TOKEN_MESSAGE = (
    "missing or wrong API token; send 'Authorization: Bearer <token>' with the "
    "value of FEATUREGAP_API_TOKEN"
)


class TokenGate:
    """ASGI middleware: with a token set, ``/api`` requests without it get 401 at once.

    The route dependency ``require_token`` checks again (and documents the scheme in the
    OpenAPI schema); this gate answers before a single body byte is received, so a large
    body sent without the token costs nothing.

    Args:
        app: the wrapped application.
        token: the expected token (``FEATUREGAP_API_TOKEN``); ``None`` lets everything in.
    """

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.token = token.encode() if token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            self.token is not None
            and scope["type"] == "http"
            and (scope["path"] == "/api" or scope["path"].startswith("/api/"))
        ):
            scheme, _, given = Headers(scope=scope).get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not secrets.compare_digest(
                given.strip().encode(), self.token
            ):
                await reply(
                    scope, receive, send, 401, TOKEN_MESSAGE, {"WWW-Authenticate": "Bearer"}
                )
                return
        await self.app(scope, receive, send)
