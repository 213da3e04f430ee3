"""Extraction jobs: box descriptors extracted in batches into the feature store."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, ClassVar, Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import ConfigDict, Field

from app.api.deps import ERRORS, JobsDep, SettingsDep, StoreDep, load_model
from app.api.schemas import BoxesAtLayerIn, JobAccepted
from app.engine.layers import check_layer
from app.jobs import Cancelled, Progress
from app.service.backends import backend
from app.service.extraction import ExtractionReport
from app.service.features import check_limits

__all__ = ["router", "ExtractionIn"]

router = APIRouter(prefix="/api", tags=["analysis"])


class ExtractionIn(BoxesAtLayerIn):
    """Which boxes (ids, or labels; default all) to extract at which layers, and how."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "labels": ["brick", "grass"],
                    "model": "efficientnet_lite0",
                    "layers": ["blocks.5.0.conv_pw", "conv_head"],
                    "descriptor": "gap",
                    "batch_size": 16,
                }
            ]
        }
    )
    exclusive: ClassVar[tuple[str, str] | None] = ("box_ids", "labels")

    box_ids: list[int] | None = None
    labels: list[str] | None = None
    layers: list[str] = Field(min_length=1)
    descriptor: Literal["gap", "grid", "pixels"] = "gap"
    batch_size: int = Field(16, ge=1, le=256)


@router.post(
    "/extractions",
    status_code=202,
    response_model=JobAccepted,
    responses={
        200: {"model": ExtractionReport, "description": "The job's result, once done."},
        **ERRORS,
    },
)
def post_extraction(
    body: ExtractionIn, store: StoreDep, settings: SettingsDep, jobs: JobsDep
) -> Any:
    """Queue extraction of the boxes' missing descriptors (poll or cancel ``/api/jobs``)."""
    model = load_model(settings, body.model)
    check_limits(settings, layers=len(body.layers))
    for layer in body.layers:
        check_layer(model, layer)
    boxes = store.boxes(ids=body.box_ids, labels=body.labels)  # neither: every box

    def work(progress: Progress, cancelled: Cancelled) -> dict[str, Any]:
        report = backend(settings)(
            store,
            model,
            boxes,
            body.layers,
            body.descriptor,
            body.grid_size,
            body.mode,
            body.batch_size,
            progress=progress,
            cancelled=cancelled,
        )
        store.features.compact()
        return asdict(report)

    job_id = jobs.submit("extraction", work)
    return JSONResponse(status_code=202, content=JobAccepted(job_id=job_id).model_dump())
