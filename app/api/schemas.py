"""Pydantic models shared by the routers (request bodies carry OpenAPI examples)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "BoxesAtLayerIn",
    "ErrorOut",
    "FromRecord",
    "ModelName",
    "ImageOut",
    "BoxIn",
    "BoxPatch",
    "BoxOut",
    "LabelCount",
    "JobOut",
    "JobAccepted",
    "ImportResult",
    "Detail",
]

ModelName = Annotated[
    str | None,
    Field(
        min_length=1,
        max_length=200,
        description=(
            "A model of GET /api/models; default: the server's (FEATUREGAP_DEFAULT_MODEL)."
        ),
    ),
]
"""The model a request body names (``None``: the server's default model)."""


class BoxesAtLayerIn(BaseModel):
    """What every analysis of stored boxes at a layer shares: the model, the grid of the
    ``grid``/``pixels`` descriptors and the input mode; a subclass naming two ways to choose
    boxes in ``exclusive`` refuses a body that gives both."""

    model_config = ConfigDict(extra="forbid")
    exclusive: ClassVar[tuple[str, str] | None] = None

    model: ModelName = None
    grid_size: int = Field(4, ge=1, le=16)
    mode: Literal["resize", "native"] = "resize"

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if self.exclusive and all(getattr(self, f) is not None for f in self.exclusive):
            raise ValueError(f"give either {self.exclusive[0]} or {self.exclusive[1]}, not both")
        return self


class Detail(BaseModel):
    """An error or status message."""

    detail: str


class FromRecord(BaseModel):
    """An answer read field by field from a store record or job snapshot of the same names."""

    model_config = ConfigDict(from_attributes=True)

    @classmethod
    def of(cls, record: object) -> Self:
        """From a record with these fields as attributes."""
        return cls.model_validate(record)


class ImageOut(FromRecord):
    """A stored image; width and height are those of the image as displayed."""

    id: int
    filename: str
    width: int
    height: int
    sha256: str
    format: str
    label: str | None
    box_count: int
    box_labels: list[str] = Field(
        default_factory=list, description="The distinct labels of its boxes, sorted."
    )
    created_at: datetime


class BoxIn(BaseModel):
    """A box in the displayed image's pixels: origin top-left, x right, y down.

    A box that sticks out of the image is clipped to it; one with ``w`` or ``h`` ≤ 0, outside
    the image, or under one pixel once clipped is refused with 422.
    """

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"x": 120, "y": 40, "w": 160, "h": 140, "label": "cat"}]}
    )

    x: float = Field(allow_inf_nan=False)
    y: float = Field(allow_inf_nan=False)
    w: float = Field(allow_inf_nan=False)
    h: float = Field(allow_inf_nan=False)
    label: str = Field(min_length=1, max_length=200, pattern=r"\S")


class BoxPatch(BaseModel):
    """Some of a box's fields to change."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"label": "dog"}, {"x": 10, "w": 50}]}
    )

    x: float | None = Field(None, allow_inf_nan=False)
    y: float | None = Field(None, allow_inf_nan=False)
    w: float | None = Field(None, allow_inf_nan=False)
    h: float | None = Field(None, allow_inf_nan=False)
    label: str | None = Field(None, min_length=1, max_length=200, pattern=r"\S")


class BoxOut(FromRecord):
    """A stored box."""

    id: int
    image_id: int
    x: float
    y: float
    w: float
    h: float
    label: str
    created_at: datetime


class LabelCount(BaseModel):
    """A box label with its numbers of boxes and of images holding such boxes, and its colour
    (the same in the editor, the heat map and the scatter)."""

    label: str
    boxes: int
    images: int
    colour: str


class JobOut(FromRecord):
    """A job's state; ``result`` is set when ``state`` is ``done``."""

    id: str
    kind: str
    state: Literal["queued", "running", "done", "failed", "cancelled", "interrupted"]
    progress: float
    message: str
    result: Any = None
    error: str | None = None
    created_at: datetime
    finished_at: datetime | None = None


class ErrorOut(BaseModel):
    """An error: a message saying what to fix, or FastAPI's list of invalid fields."""

    detail: str | list[dict[str, Any]]


class JobAccepted(BaseModel):
    """A long request was queued as a job: poll ``GET /api/jobs/{job_id}``."""

    job_id: str
    state: str = "queued"


class ImportResult(FromRecord):
    """What an import added, found already there (not added twice) and skipped (why)."""

    boxes_added: int
    boxes_present: int = 0
    images_matched: int
    skipped: list[str]
