"""Top-k predictions for a stored image or one of its boxes."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from app.api.deps import ERRORS, PoolDep, StoreDep, load_model
from app.api.heatmaps import Prediction
from app.api.schemas import ModelName
from app.service.estimates import prediction_budget
from app.service.heatmaps import ENGINE_LOCK

__all__ = ["router", "PredictionIn", "PredictionOut"]

router = APIRouter(prefix="/api/predictions", tags=["predictions"])


class PredictionIn(BaseModel):
    """Which image (or box of it) to classify, with which model."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"image_id": 1, "box_id": None, "k": 5}]}
    )

    image_id: int = Field(ge=1)
    model: ModelName = None
    box_id: int | None = Field(None, ge=1, description="Classify this box's crop instead.")
    k: int = Field(5, ge=1, le=100)
    mode: Literal["resize", "native"] = "resize"


class PredictionOut(BaseModel):
    """The top-k classes."""

    image_id: int
    box_id: int | None
    model: str
    predictions: list[Prediction]


@router.post("", response_model=PredictionOut, responses={**ERRORS})
async def post_prediction(body: PredictionIn, store: StoreDep, pool: PoolDep) -> PredictionOut:
    """Top-k classes for an image, or for one of its boxes' crop."""
    return await pool.run(lambda _cancelled: _predict(body, store))


def _predict(body: PredictionIn, store: StoreDep) -> PredictionOut:
    from app.boxes import Box
    from app.engine.predictions import predict

    image = store.get_image(body.image_id)
    box = None
    if body.box_id is not None:
        record = store.get_box(body.box_id)
        if record.image_id != image.id:
            raise ValueError(
                f"box {record.id} belongs to image {record.image_id}, not "
                f"{image.id}; send that image_id or omit box_id"
            )
        box = Box(record.x, record.y, record.w, record.h)
    model = load_model(store.settings, body.model)
    prediction_budget(store.settings, model, image, body.mode)  # 413 before decoding
    decoded = store.load_decoded(image)
    with ENGINE_LOCK:
        top = predict(model, decoded, body.k, box, body.mode, store.settings.native_max_side)
    return PredictionOut(
        image_id=image.id,
        box_id=body.box_id,
        model=model.spec.name,
        predictions=[
            Prediction(index=p.index, label=p.label, probability=p.probability) for p in top
        ],
    )
