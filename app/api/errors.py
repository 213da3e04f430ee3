"""The one place errors become HTTP answers: JSON ``{"detail": ...}`` with a 4xx (or 507, 503).

``app.errors`` types map to their statuses; the engine's plain ``ValueError`` is a 422 and
``KeyError`` a 404; a full disk (``OSError`` ENOSPC/EDQUOT, SQLite's "database or disk is
full") is a 507. Anything else is a bug: logged with its traceback and answered with a
generic 500 that leaks nothing.
"""

from __future__ import annotations

import errno
import logging
import sqlite3

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError

from app.errors import (
    Conflict,
    FeatureGapError,
    Forbidden,
    InsufficientStorage,
    InvalidInput,
    LimitExceeded,
    NotFound,
    Unavailable,
)

__all__ = ["LimitExceeded", "install_error_handlers", "message_of", "status_of"]

_log = logging.getLogger("featuregap.api")

_STATUS: dict[type[FeatureGapError], int] = {
    NotFound: 404,
    InvalidInput: 422,
    LimitExceeded: 413,
    Conflict: 409,
    Forbidden: 403,
    InsufficientStorage: 507,
    Unavailable: 503,
}
_DISK_FULL = {errno.ENOSPC, errno.EDQUOT}
_DISK_FULL_MESSAGE = (
    "the server's disk is full, nothing was stored; free space under "
    "FEATUREGAP_DATA_DIR (or the database's disk) and send it again"
)


def message_of(exc: BaseException) -> str:
    """The human message of an exception (KeyError's ``str`` adds quotes, so use its arg)."""
    if isinstance(exc, KeyError) and exc.args:
        return str(exc.args[0])
    return str(exc) or type(exc).__name__


def status_of(exc: FeatureGapError) -> int:
    """The HTTP status of one of FeatureGap's error types (the nearest mapped base class)."""
    for cls in type(exc).__mro__:
        if cls in _STATUS:
            return _STATUS[cls]
    return 400


def _detail(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(status_code=status, content={"detail": message}, headers=headers)


async def _featuregap_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, FeatureGapError)
    headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, Unavailable) else None
    return _detail(status_of(exc), message_of(exc), headers)


async def _value_error(_request: Request, exc: Exception) -> JSONResponse:
    return _detail(422, message_of(exc))


async def _key_error(_request: Request, exc: Exception) -> JSONResponse:
    return _detail(404, message_of(exc))


async def _os_error(request: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, OSError) and exc.errno in _DISK_FULL:
        _log.error("disk full during %s %s: %s", request.method, request.url.path, exc)
        return _detail(507, _DISK_FULL_MESSAGE)
    raise exc  # any other OSError is a bug: the 500 handler logs it


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    original = getattr(exc, "orig", None)
    if isinstance(original, sqlite3.OperationalError) and (
        getattr(original, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
    ):
        _log.error("database full during %s %s: %s", request.method, request.url.path, exc)
        return _detail(507, _DISK_FULL_MESSAGE)
    raise exc


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    # A 500 is a bug: keep the traceback in the log, tell the client nothing about internals.
    _log.error("unhandled error in %s %s", request.method, request.url.path, exc_info=exc)
    return _detail(500, "internal error; it was logged on the server, please report it")


def install_error_handlers(app: FastAPI) -> None:
    """Map FeatureGap's error types, ``ValueError``, ``KeyError``, a full disk and the rest."""
    app.add_exception_handler(FeatureGapError, _featuregap_error)
    app.add_exception_handler(ValueError, _value_error)
    app.add_exception_handler(KeyError, _key_error)
    app.add_exception_handler(OSError, _os_error)
    app.add_exception_handler(OperationalError, _database_error)
    app.add_exception_handler(Exception, _unexpected)
