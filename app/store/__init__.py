"""Persistence: images on disk by content hash, boxes and results in SQLAlchemy."""

from app.store.repository import (
    BoxRecord,
    ImageRecord,
    SchemaMismatchError,
    Store,
    check_box_in_image,
)
from app.store.tables import SCHEMA_VERSION

__all__ = ["Store", "ImageRecord", "BoxRecord", "SchemaMismatchError", "SCHEMA_VERSION",
           "check_box_in_image"]
