"""Engine and store errors become 4xx JSON ``{"detail": ...}`` here and only here."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from app.jobs import PoolBusy

__all__ = ["LimitExceeded", "install_error_handlers", "message_of"]


class LimitExceeded(Exception):
    """A request goes past a size limit from the settings (answered with 413)."""


def message_of(exc: BaseException) -> str:
    """The human message of an exception (KeyError's ``str`` adds quotes, so use its arg)."""
    if isinstance(exc, KeyError) and exc.args:
        return str(exc.args[0])
    return str(exc) or type(exc).__name__


async def _value_error(_request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse(status_code=422, content={"detail": message_of(exc)})


async def _key_error(_request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse(status_code=404, content={"detail": message_of(exc)})


async def _limit(_request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse(status_code=413, content={"detail": message_of(exc)})


async def _busy(_request: Request, exc: Exception) -> JSONResponse:
    retry_after = exc.retry_after if isinstance(exc, PoolBusy) else 5
    return JSONResponse(status_code=503, content={"detail": message_of(exc)},
                        headers={"Retry-After": str(retry_after)})


def install_error_handlers(app: FastAPI) -> None:
    """Map ``ValueError`` → 422, ``KeyError`` → 404, ``LimitExceeded`` → 413 and a full
    worker pool (``PoolBusy``) → 503 with ``Retry-After``."""
    app.add_exception_handler(PoolBusy, _busy)
    app.add_exception_handler(LimitExceeded, _limit)
    app.add_exception_handler(ValueError, _value_error)
    app.add_exception_handler(KeyError, _key_error)
