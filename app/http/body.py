"""Request bodies: sizes counted as they stream, JSON nesting bounded, before any parser runs.

Multipart uploads may be as large as ``FEATUREGAP_MAX_UPLOAD_BYTES`` (plus room for the
form around the file); every other body (the JSON of analysis and box routes) as large as
``FEATUREGAP_MAX_JSON_BYTES``. A declared ``Content-Length`` over the limit is refused at
once; a chunked body (no length) is counted as it arrives and cut off with 413 as soon as
it passes. JSON bodies are read here in full (they are small), their nesting measured
without recursion, and deeper than ``FEATUREGAP_MAX_JSON_DEPTH`` is a 422: Python's parser
would otherwise recurse 100,000 levels deep. A path may have an upload limit of its own
(the dataset zip, ``FEATUREGAP_MAX_ZIP_UPLOAD_BYTES``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.http._reply import reply

__all__ = ["BodyLimits", "ENVELOPE_BYTES", "json_depth"]

ENVELOPE_BYTES = 1024 * 1024
"""Room for multipart headers and small form fields around the file itself."""

_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def json_depth(body: bytes) -> int:
    """How deep a JSON text nests arrays and objects (0 for a scalar), in linear time.

    Brackets inside strings do not count; the text need not be valid JSON (the parser
    says what else is wrong). An unterminated string counts its brackets, which can only
    make a broken body look deeper.
    """
    brackets = _STRING.sub(b"", body).translate(None, _NOT_BRACKETS)
    if not brackets:
        return 0
    codes = np.frombuffer(brackets, dtype=np.uint8)
    steps = np.where((codes == ord("[")) | (codes == ord("{")), 1, -1)
    return int(np.cumsum(steps).max(initial=0))


def _is_json(content_type: str | None) -> bool:
    # FastAPI parses a body without a content type as JSON too.
    if not content_type:
        return True
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


class BodyLimits:
    """ASGI middleware: refuse bodies over their limit (413) and JSON nested too deep (422).

    Args:
        app: the wrapped application.
        max_upload_bytes: the file limit of multipart uploads (``FEATUREGAP_MAX_UPLOAD_BYTES``).
        max_json_bytes: the limit of any other body (``FEATUREGAP_MAX_JSON_BYTES``).
        max_json_depth: the deepest JSON nesting accepted (``FEATUREGAP_MAX_JSON_DEPTH``).
        upload_limits: paths whose uploads have a limit of their own: path → (bytes, the
            setting's name), e.g. the dataset zip.
    """

    def __init__(
        self,
        app: ASGIApp,
        max_upload_bytes: int,
        max_json_bytes: int,
        max_json_depth: int,
        upload_limits: Mapping[str, tuple[int, str]] | None = None,
    ) -> None:
        self.app = app
        self.max_upload_bytes = max_upload_bytes
        self.upload_limits = dict(upload_limits or {})
        self.max_json_bytes = max_json_bytes
        self.max_json_depth = max_json_depth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        declared = headers.get("content-length")
        if declared is None and "transfer-encoding" not in headers:
            await self.app(scope, receive, send)  # no body
            return
        content_type = headers.get("content-type")
        multipart = (content_type or "").lower().startswith("multipart/")
        if multipart:
            own, setting = self.upload_limits.get(
                scope["path"], (self.max_upload_bytes, "FEATUREGAP_MAX_UPLOAD_BYTES")
            )
            limit, too_large = own + ENVELOPE_BYTES, self._upload_message(own, setting)
        else:
            limit, too_large = self.max_json_bytes, self._json_message()
        if declared is not None and declared.strip().isdigit() and int(declared) > limit:
            await reply(scope, receive, send, 413, too_large)
            return
        if multipart:
            await self._stream(scope, receive, send, limit, too_large)
        else:
            await self._buffer(scope, receive, send, limit, too_large, _is_json(content_type))

    @staticmethod
    def _upload_message(limit: int, setting: str) -> str:
        return (
            f"the request body is larger than the limit of {limit} bytes "
            f"per upload (setting {setting}); send a smaller file"
        )

    def _json_message(self) -> str:
        return (
            f"the request body is larger than the limit of {self.max_json_bytes} bytes "
            "for JSON requests (setting FEATUREGAP_MAX_JSON_BYTES); send less, e.g. "
            "labels instead of long lists of box ids"
        )

    async def _buffer(
        self, scope: Scope, receive: Receive, send: Send, limit: int, too_large: str, is_json: bool
    ) -> None:
        """Read a small body whole, check it, then hand it to the app in one message."""
        parts: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client left; nobody to answer
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await reply(scope, receive, send, 413, too_large)
                return
            parts.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(parts)
        if is_json and body.count(b"[") + body.count(b"{") > self.max_json_depth:
            depth = json_depth(body)
            if depth > self.max_json_depth:
                await reply(
                    scope,
                    receive,
                    send,
                    422,
                    (
                        f"the JSON body nests {depth} levels deep, more than "
                        f"{self.max_json_depth} (setting FEATUREGAP_MAX_JSON_DEPTH); flatten it"
                    ),
                )
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for a disconnect, as the server does

        await self.app(scope, replay, send)

    async def _stream(
        self, scope: Scope, receive: Receive, send: Send, limit: int, too_large: str
    ) -> None:
        """Pass a large body through, counting it; past the limit answer 413 and cut it."""
        size = 0
        started = False
        refused = False

        async def counted() -> Message:
            nonlocal size, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                size += len(message.get("body", b""))
                if size > limit:
                    refused = True
                    if not started:
                        await reply(scope, receive, send, 413, too_large)
                    # The app sees a client that went away and stops reading.
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refused:
                return  # the 413 went out already; drop what the app answers to the cut
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        await self.app(scope, counted, guarded_send)
