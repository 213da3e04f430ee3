"""Refuse request bodies over the upload limit before anything parses them."""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["BodySizeLimit", "ENVELOPE_BYTES"]

ENVELOPE_BYTES = 1024 * 1024
"""Room for multipart headers and small form fields around the file itself."""


class BodySizeLimit:
    """ASGI middleware: a declared ``Content-Length`` over the limit gets 413 at once.

    The handlers still count the bytes they read (``read_limited``), which covers chunked
    requests that declare no length; this stops a large declared body before it is spooled.

    Args:
        app: the wrapped application.
        max_upload_bytes: the upload limit (setting ``FEATUREGAP_MAX_UPLOAD_BYTES``).
    """

    def __init__(self, app: ASGIApp, max_upload_bytes: int) -> None:
        self.app = app
        self.max_upload_bytes = max_upload_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            declared = dict(scope["headers"]).get(b"content-length")
            limit = self.max_upload_bytes + ENVELOPE_BYTES
            if declared is not None and declared.isdigit() and int(declared) > limit:
                body = json.dumps({"detail": (
                    f"the request body is {int(declared)} bytes, above the limit of "
                    f"{self.max_upload_bytes} bytes per upload (setting "
                    "FEATUREGAP_MAX_UPLOAD_BYTES); send a smaller file")}).encode()
                await send({"type": "http.response.start", "status": 413,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"content-length", str(len(body)).encode()),
                                        (b"connection", b"close")]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)
