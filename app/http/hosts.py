"""Answer only for configured host names: a DNS-rebinding page sends its own name as Host."""

from __future__ import annotations

from collections.abc import Iterable

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from app.http._reply import reply

__all__ = ["AllowedHosts", "host_name"]


def host_name(host: str) -> str:
    """The name in a ``Host`` value, lower-case, without port, brackets or a final dot."""
    host = host.strip().lower()
    if host.startswith("["):  # [::1]:8000
        return host[1:].split("]", 1)[0]
    if host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host.rstrip(".")


class AllowedHosts:
    """ASGI middleware: a request whose ``Host`` is not an allowed name gets 400.

    A page on ``evil.example`` whose DNS later points at 127.0.0.1 reaches this server with
    ``Host: evil.example``; refusing unknown names keeps it from reading or writing. A
    request with no ``Host`` (HTTP/1.0 tools; browsers always send one) passes.

    Args:
        app: the wrapped application.
        hosts: allowed names (setting ``FEATUREGAP_ALLOWED_HOSTS``); ``*`` allows any.
    """

    def __init__(self, app: ASGIApp, hosts: Iterable[str]) -> None:
        self.app = app
        self.hosts = {host_name(h) for h in hosts}
        self.any_host = "*" in self.hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and not self.any_host:
            host = Headers(scope=scope).get("host")
            if host is not None and host_name(host) not in self.hosts:
                await reply(
                    scope,
                    receive,
                    send,
                    400,
                    (
                        f"this server does not answer for host {host_name(host)[:100]!r}; add it "
                        f"to FEATUREGAP_ALLOWED_HOSTS (now {sorted(self.hosts)}) if it is yours"
                    ),
                )
                return
        await self.app(scope, receive, send)
