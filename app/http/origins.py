"""Without an API token, only this server's own pages (or listed origins) may write.

Any web page can make a browser POST a form or a multipart upload to ``localhost``; the
browser then says where it comes from in ``Origin`` (or ``Referer``). Clients that are not
browsers (curl, httpx, the CLI) send neither and stay allowed.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from app.http._reply import reply

__all__ = ["SameOriginWrites"]

_UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _netloc(url: str) -> str | None:
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    return parts.netloc.lower()


def _origin(url: str) -> str:
    parts = urlsplit(url.strip().lower())
    return f"{parts.scheme}://{parts.netloc}"


class SameOriginWrites:
    """ASGI middleware: an unsafe request from another site gets 403.

    The request's origin (``Origin``, else ``Referer``) must name this server's own host
    and port, or be one of the allowed origins; ``Origin: null`` (sandboxed frames,
    ``file:`` pages) is refused. Schemes are not compared: a TLS proxy in front changes
    the scheme the server sees, and one host and port serve one site.

    Args:
        app: the wrapped application.
        allowed: other origins that may write (settings ``FEATUREGAP_ALLOWED_ORIGINS`` and
            ``FEATUREGAP_CORS_ORIGINS``), as ``scheme://host[:port]``.
    """

    def __init__(self, app: ASGIApp, allowed: Iterable[str]) -> None:
        self.app = app
        self.allowed = {_origin(origin) for origin in allowed}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in _UNSAFE:
            headers = Headers(scope=scope)
            claimed = headers.get("origin") or headers.get("referer")
            if claimed is not None and not self._allowed(claimed, headers.get("host")):
                await reply(
                    scope,
                    receive,
                    send,
                    403,
                    (
                        f"{scope['method']} from the page at {claimed[:200]!r} is refused: without "
                        "FEATUREGAP_API_TOKEN only this server's own pages may change data; add "
                        "that origin to FEATUREGAP_ALLOWED_ORIGINS, or set an API token"
                    ),
                )
                return
        await self.app(scope, receive, send)

    def _allowed(self, claimed: str, host: str | None) -> bool:
        netloc = _netloc(claimed)
        if netloc is None:  # "null", opaque or garbled origins
            return False
        if host is not None and netloc == host.strip().lower():
            return True
        return _origin(claimed) in self.allowed
