"""Persistence: images on disk by content hash, boxes and results in SQLAlchemy."""

from app.store.repository import (
    BoxRecord,
    ImageRecord,
    SchemaMismatchError,
    Store,
)
from app.store.tables import SCHEMA_VERSION

__all__ = ["Store", "ImageRecord", "BoxRecord", "SchemaMismatchError", "SCHEMA_VERSION"]
