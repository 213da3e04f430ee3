"""Pydantic models shared by the routers (request bodies carry OpenAPI examples)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.jobs import JobSnapshot
from app.store import BoxRecord, ImageRecord

__all__ = ["ImageOut", "BoxIn", "BoxPatch", "BoxOut", "LabelCount", "JobOut", "JobAccepted",
           "ImportResult", "Detail"]


class Detail(BaseModel):
    """An error or status message."""

    detail: str


class ImageOut(BaseModel):
    """A stored image; width and height are those of the image as displayed."""

    id: int
    filename: str
    width: int
    height: int
    sha256: str
    format: str
    label: str | None
    box_count: int
    created_at: datetime

    @classmethod
    def of(cls, record: ImageRecord) -> ImageOut:
        """From a store record."""
        return cls(id=record.id, filename=record.filename, width=record.width,
                   height=record.height, sha256=record.sha256, format=record.format,
                   label=record.label, box_count=record.box_count, created_at=record.created_at)


class BoxIn(BaseModel):
    """A box in the displayed image's pixels: origin top-left, x right, y down.

    A box that sticks out of the image is clipped to it; one with ``w`` or ``h`` ≤ 0, outside
    the image, or under one pixel once clipped is refused with 422.
    """

    model_config = ConfigDict(json_schema_extra={
        "examples": [{"x": 120, "y": 40, "w": 160, "h": 140, "label": "cat"}]})

    x: float = Field(allow_inf_nan=False)
    y: float = Field(allow_inf_nan=False)
    w: float = Field(allow_inf_nan=False)
    h: float = Field(allow_inf_nan=False)
    label: str = Field(min_length=1, max_length=200, pattern=r"\S")


class BoxPatch(BaseModel):
    """Some of a box's fields to change."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"label": "dog"},
                                                              {"x": 10, "w": 50}]})

    x: float | None = Field(None, allow_inf_nan=False)
    y: float | None = Field(None, allow_inf_nan=False)
    w: float | None = Field(None, allow_inf_nan=False)
    h: float | None = Field(None, allow_inf_nan=False)
    label: str | None = Field(None, min_length=1, max_length=200, pattern=r"\S")


class BoxOut(BaseModel):
    """A stored box."""

    id: int
    image_id: int
    x: float
    y: float
    w: float
    h: float
    label: str
    created_at: datetime

    @classmethod
    def of(cls, record: BoxRecord) -> BoxOut:
        """From a store record."""
        return cls(id=record.id, image_id=record.image_id, x=record.x, y=record.y, w=record.w,
                   h=record.h, label=record.label, created_at=record.created_at)


class LabelCount(BaseModel):
    """A box label and its number of boxes."""

    label: str
    count: int


class JobOut(BaseModel):
    """A job's state; ``result`` is set when ``state`` is ``done``."""

    id: str
    kind: str
    state: Literal["queued", "running", "done", "failed", "cancelled"]
    progress: float
    message: str
    result: Any = None
    error: str | None = None

    @classmethod
    def of(cls, snapshot: JobSnapshot) -> JobOut:
        """From a runner snapshot."""
        return cls(id=snapshot.id, kind=snapshot.kind, state=snapshot.state,
                   progress=snapshot.progress, message=snapshot.message,
                   result=snapshot.result, error=snapshot.error)


class JobAccepted(BaseModel):
    """A long request was queued as a job: poll ``GET /api/jobs/{job_id}``."""

    job_id: str
    state: str = "queued"


class ImportResult(BaseModel):
    """What an import added and what it skipped (with the reason)."""

    boxes_added: int
    images_matched: int
    skipped: list[str]
