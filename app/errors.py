"""Error types raised below the API (engine, store, service, jobs); torch- and FastAPI-free.

Each type stands for one kind of answer; ``app.api.errors`` maps them to HTTP statuses and
nothing else does. ``NotFound`` is also a ``KeyError`` and ``InvalidInput`` also a
``ValueError``, so code that catches those (and the engine's plain ``KeyError`` /
``ValueError``) keeps working. Messages say what to change: "unknown layer 'x'; use one
of …", "… (setting FEATUREGAP_MAX_UPLOAD_BYTES); send a smaller file".
"""

from __future__ import annotations

__all__ = [
    "Conflict",
    "FeatureGapError",
    "Forbidden",
    "InsufficientStorage",
    "InvalidInput",
    "LimitExceeded",
    "NotFound",
    "Unavailable",
]


class FeatureGapError(Exception):
    """Base of every error FeatureGap raises on purpose (an answer, not a bug)."""

    def __str__(self) -> str:
        # KeyError's str() quotes its message; every error here reads as plain text.
        return str(self.args[0]) if self.args else type(self).__name__


class NotFound(FeatureGapError, KeyError):
    """Something named by id or name does not exist (HTTP 404)."""


class InvalidInput(FeatureGapError, ValueError):
    """A value the caller sent cannot be used as it is (HTTP 422)."""


class Forbidden(FeatureGapError):
    """The request asks for something a setting does not allow, e.g. a path (HTTP 403)."""


class LimitExceeded(FeatureGapError):
    """A request goes past a size limit from the settings (HTTP 413)."""


class Conflict(FeatureGapError):
    """The request clashes with the current state, e.g. a duplicate or a busy job (HTTP 409)."""


class InsufficientStorage(FeatureGapError):
    """The disk (or the database) is full; nothing was stored (HTTP 507)."""


class Unavailable(FeatureGapError):
    """The service is too busy to take the request now (HTTP 503 with ``Retry-After``).

    Args:
        message: what is busy and what to do.
        retry_after: seconds after which a retry may succeed (sent as ``Retry-After``).
    """

    def __init__(self, message: str, retry_after: int = 5) -> None:
        super().__init__(message)
        self.retry_after = max(1, int(retry_after))
