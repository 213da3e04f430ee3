"""Keyset pagination shared by the listing routes: ``limit``/``cursor`` in, a page out.

A cursor is opaque to clients: URL-safe base64 of ``<resource>:<last id>``. It names its
resource, so a cursor of ``/api/images`` given to ``/api/boxes`` is refused with 422
rather than silently starting somewhere else.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Annotated, Generic, TypeVar

from fastapi import Query
from pydantic import BaseModel

from app.errors import InvalidInput
from app.store import Page

__all__ = [
    "Paged",
    "LimitQuery",
    "CursorQuery",
    "DEFAULT_LIMIT",
    "MAX_LIMIT",
    "encode_cursor",
    "decode_cursor",
    "paged",
]

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
_MAX_ID = 2**63 - 1

T = TypeVar("T")
R = TypeVar("R")

LimitQuery = Annotated[
    int, Query(ge=1, le=MAX_LIMIT, description=f"The most items on the page (≤ {MAX_LIMIT}).")
]
CursorQuery = Annotated[
    str | None,
    Query(
        max_length=200,
        description=("The previous page's ``next_cursor``; none for the first page."),
    ),
]


class Paged(BaseModel, Generic[T]):
    """A page of a listing ordered by id: follow ``next_cursor`` until it is null.

    ``total`` counts every item that matches the filters, on all pages.
    """

    items: list[T]
    next_cursor: str | None
    total: int


def encode_cursor(resource: str, after: int | None) -> str | None:
    """The opaque cursor that continues ``resource``'s listing after id ``after``."""
    if after is None:
        return None
    return base64.urlsafe_b64encode(f"{resource}:{after}".encode()).decode().rstrip("=")


def decode_cursor(resource: str, cursor: str | None) -> int:
    """The last id a cursor of ``resource`` names (0 without a cursor).

    Raises:
        InvalidInput: the cursor was not made by this listing (422).
    """
    if cursor is None:
        return 0
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
        kind, _, number = text.partition(":")
        after = int(number) if number.isdigit() else -1
    except (binascii.Error, UnicodeDecodeError, ValueError):
        kind, after = "", -1
    if kind != resource or not 0 < after <= _MAX_ID:
        raise InvalidInput(
            f"cursor {cursor[:40]!r} is not one of GET /api/{resource}'s; pass "
            "the next_cursor of its previous page, or none for the first page"
        )
    return after


def paged(
    resource: str, cursor: str | None, fetch: Callable[[int], Page[R]], out: Callable[[R], T]
) -> Paged[T]:
    """The page of ``resource`` after ``cursor``: ``fetch`` reads the store's page after an
    id, ``out`` turns each of its records into the response item.

    Raises:
        InvalidInput: the cursor was not made by this listing (422).
    """
    page = fetch(decode_cursor(resource, cursor))
    return Paged(
        items=[out(r) for r in page.items],
        total=page.total,
        next_cursor=encode_cursor(resource, page.next_after),
    )
