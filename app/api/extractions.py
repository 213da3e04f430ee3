"""Extraction jobs: box descriptors extracted in batches into the feature store."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

from app.api.deps import JobsDep, SettingsDep, StoreDep
from app.api.distances import ERRORS
from app.api.models import model_info
from app.api.schemas import JobAccepted
from app.engine.layers import check_layer
from app.jobs import Cancelled, Progress
from app.service.extraction import extract_boxes
from app.service.features import check_limits

__all__ = ["router", "ExtractionIn", "ExtractionOut"]

router = APIRouter(prefix="/api", tags=["analysis"])


class ExtractionIn(BaseModel):
    """Which boxes (ids, or labels; default all) to extract at which layers, and how."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "labels": ["brick", "grass"], "model": "efficientnet_lite0",
        "layers": ["blocks.5.0.conv_pw", "conv_head"], "descriptor": "gap", "batch_size": 16}]})

    box_ids: list[int] | None = None
    labels: list[str] | None = None
    model: str = Field("efficientnet_lite0", min_length=1, max_length=200)
    layers: list[str] = Field(min_length=1)
    descriptor: Literal["gap", "grid", "pixels"] = "gap"
    grid_size: int = Field(4, ge=1, le=16)
    batch_size: int = Field(16, ge=1, le=256)
    mode: Literal["resize", "native"] = "resize"

    @model_validator(mode="after")
    def _one_source(self) -> ExtractionIn:
        if self.box_ids is not None and self.labels is not None:
            raise ValueError("give either box_ids or labels, not both")
        return self


class ExtractionOut(BaseModel):
    """A finished extraction job's result (``GET /api/jobs/{job_id}``'s ``result``):
    ``extracted`` and ``present`` count box × layer descriptors."""

    boxes: int
    layers: int
    images: int
    extracted: int
    present: int
    seconds: float


@router.post("/extractions", status_code=202, response_model=JobAccepted,
             responses={200: {"model": ExtractionOut,
                              "description": "The job's result, once done."}, **ERRORS})
def post_extraction(body: ExtractionIn, store: StoreDep, settings: SettingsDep,
                    jobs: JobsDep) -> Any:
    """Queue extraction of the boxes' missing descriptors (poll or cancel ``/api/jobs``)."""
    model = model_info(body.model)
    check_limits(settings, layers=len(body.layers))
    for layer in body.layers:
        check_layer(model, layer)
    if body.box_ids is not None:
        boxes = store.boxes(ids=body.box_ids)
    else:
        boxes = store.boxes(labels=body.labels) if body.labels is not None else store.boxes()

    def work(progress: Progress, cancelled: Cancelled) -> dict[str, Any]:
        report, _ = extract_boxes(store, model, boxes, body.layers, body.descriptor,
                                  body.grid_size, body.mode, body.batch_size,
                                  progress=progress, cancelled=cancelled)
        store.features.compact()
        return ExtractionOut(**asdict(report)).model_dump()

    job_id = jobs.submit("extraction", work)
    return JSONResponse(status_code=202, content=JobAccepted(job_id=job_id).model_dump())
