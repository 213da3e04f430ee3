"""Security headers on every response: CSP, nosniff, no framing, same-origin referrers."""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["CONTENT_SECURITY_POLICY", "SecurityHeaders"]

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        # Scripts: this server's files only, no inline code and no eval (plotly.js 4 draws our
        # SVG traces without it). Styles: plotly.js injects a <style> element and sets style
        # attributes (measured in Chromium: both are blocked without 'unsafe-inline' and the
        # modebar and hover boxes lose their layout), so inline styles are allowed, scripts not.
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        # Plot images and thumbnails are fetched with the token and shown as blob: URLs;
        # Plotly's modebar downloads a PNG it renders through a data: URL.
        "img-src 'self' data: blob:",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
"""The dashboard's policy: only this server's scripts, styles and connections."""

_DEFAULTS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


class SecurityHeaders:
    """ASGI middleware: add the security headers a response does not set itself.

    A route that needs another policy (the API docs' inline start-up script) sets its own
    ``Content-Security-Policy``, which is kept.

    Args:
        app: the wrapped application.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in _DEFAULTS.items():
                    if name not in headers:
                        headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)
