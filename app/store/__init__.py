"""Persistence: images on disk by content hash, boxes and results in SQLAlchemy."""

from app.store.repository import (
    BoxRecord,
    ImageRecord,
    JobRecord,
    SchemaMismatchError,
    Store,
)
from app.store.tables import SCHEMA_VERSION

__all__ = ["Store", "ImageRecord", "BoxRecord", "JobRecord", "SchemaMismatchError",
           "SCHEMA_VERSION"]
