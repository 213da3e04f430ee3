"""Persistence: images on disk by content hash, boxes and results in SQLAlchemy."""

from app.store.features import FeatureSet, FeatureStore, StoredBox
from app.store.repository import (
    BoxRecord,
    ImageRecord,
    JobRecord,
    LabelSummary,
    Page,
    SchemaMismatchError,
    Store,
)
from app.store.tables import SCHEMA_VERSION

__all__ = [
    "Store",
    "ImageRecord",
    "BoxRecord",
    "JobRecord",
    "LabelSummary",
    "Page",
    "SchemaMismatchError",
    "SCHEMA_VERSION",
    "FeatureStore",
    "FeatureSet",
    "StoredBox",
]
