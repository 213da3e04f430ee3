"""The store's tables (SQLAlchemy 2, typed ``Mapped[...]``)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "SCHEMA_VERSION",
    "ADDED_COLUMNS",
    "Base",
    "ImageRow",
    "BoxRow",
    "ResultRow",
    "SchemaVersionRow",
    "JobRow",
    "FeatureSetRow",
    "FeatureSegmentRow",
    "FeatureRow",
]

SCHEMA_VERSION = 1
"""Bump when the tables change; a store written by another version is refused at start."""


def _now() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    """Declarative base of every table."""


class ImageRow(Base):
    """An uploaded picture, stored once per content hash."""

    __tablename__ = "images"
    # AUTOINCREMENT: an id is never handed out twice, even after the newest row is deleted,
    # so an exported id cannot later name another image.
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    filename: Mapped[str] = mapped_column(String(255))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    format: Mapped[str] = mapped_column(String(16))
    label: Mapped[str | None] = mapped_column(String(200), nullable=True, index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class BoxRow(Base):
    """A box ``x, y, w, h`` in the displayed image's pixels, with its label."""

    __tablename__ = "boxes"
    __table_args__ = {"sqlite_autoincrement": True}  # ids never reused (see ImageRow)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), index=True)
    x: Mapped[float] = mapped_column(Float)
    y: Mapped[float] = mapped_column(Float)
    w: Mapped[float] = mapped_column(Float)
    h: Mapped[float] = mapped_column(Float)
    label: Mapped[str] = mapped_column(String(200), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    # The id the box had in the file it was imported from (a COCO annotation id that is an
    # integer), so an export gives it back. Added to older stores at start (ADDED_COLUMNS).
    source_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


ADDED_COLUMNS: dict[str, tuple[str, ...]] = {"boxes": ("source_id",)}
"""Nullable columns added after schema version 1; the store adds them to older databases."""


class ResultRow(Base):
    """A cached analysis result (JSON text), dropped with its image when it has one."""

    __tablename__ = "results"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    kind: Mapped[str] = mapped_column(String(50), index=True)
    json: Mapped[str] = mapped_column(Text)
    image_id: Mapped[int | None] = mapped_column(
        ForeignKey("images.id", ondelete="CASCADE"), nullable=True, index=True
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class JobRow(Base):
    """A job (a long request run by the worker pool): its state survives restarts.

    ``result`` is the finished job's JSON answer; a table added to an existing store by
    ``create_all`` at start, so it needs no schema version of its own.
    """

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(50))
    state: Mapped[str] = mapped_column(String(16), index=True)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    message: Mapped[str] = mapped_column(String(500), default="")
    result: Mapped[str | None] = mapped_column(Text, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class SchemaVersionRow(Base):
    """One row: the schema version the store was created with."""

    __tablename__ = "schema_version"

    version: Mapped[int] = mapped_column(Integer, primary_key=True)


class FeatureSetRow(Base):
    """What a stored descriptor was computed with: one row per model, weights, layer,
    descriptor, grid size (0 for ``gap``) and input mode; its rows have one shape.

    Added to an existing store by ``create_all`` at start, like :class:`JobRow`.
    """

    __tablename__ = "feature_sets"
    __table_args__ = (
        UniqueConstraint("model", "weights_sha256", "layer", "descriptor", "grid_size", "mode"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model: Mapped[str] = mapped_column(String(200))
    weights_sha256: Mapped[str] = mapped_column(String(64))
    layer: Mapped[str] = mapped_column(String(300))
    descriptor: Mapped[str] = mapped_column(String(16))
    grid_size: Mapped[int] = mapped_column(Integer)
    mode: Mapped[str] = mapped_column(String(64))
    rows_per_box: Mapped[int] = mapped_column(Integer)
    width: Mapped[int] = mapped_column(Integer)


class FeatureSegmentRow(Base):
    """One ``.npy`` file of a feature set: ``boxes × (rows_per_box · width)`` float32."""

    __tablename__ = "feature_segments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    set_id: Mapped[int] = mapped_column(
        ForeignKey("feature_sets.id", ondelete="CASCADE"), index=True
    )
    filename: Mapped[str] = mapped_column(String(100), unique=True)
    boxes: Mapped[int] = mapped_column(Integer)


class FeatureRow(Base):
    """Where a box's descriptor in a feature set lies, and the box content it belongs to.

    The image hash and the clipped geometry are part of the key: a row whose box has since
    moved, or whose box is gone, is never read.
    """

    __tablename__ = "features"

    set_id: Mapped[int] = mapped_column(
        ForeignKey("feature_sets.id", ondelete="CASCADE"), primary_key=True
    )
    box_id: Mapped[int] = mapped_column(
        ForeignKey("boxes.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    image_sha256: Mapped[str] = mapped_column(String(64))
    x: Mapped[float] = mapped_column(Float)
    y: Mapped[float] = mapped_column(Float)
    w: Mapped[float] = mapped_column(Float)
    h: Mapped[float] = mapped_column(Float)
    segment_id: Mapped[int] = mapped_column(
        ForeignKey("feature_segments.id", ondelete="CASCADE"), index=True
    )
    position: Mapped[int] = mapped_column(Integer)
