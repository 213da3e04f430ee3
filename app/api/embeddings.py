"""t-SNE or PCA of box descriptors at one layer, as points and a Plotly scatter."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, model_validator

from app.api.deps import JobsDep, PoolDep, SettingsDep, StoreDep
from app.api.distances import ERRORS, answer_or_queue, precheck
from app.api.models import model_info
from app.api.schemas import JobAccepted
from app.jobs import Cancelled
from app.service.analysis import EmbeddingRequest, embedding, estimate_embedding

__all__ = ["router", "EmbeddingIn", "EmbeddingOut"]

router = APIRouter(prefix="/api", tags=["analysis"])


class EmbeddingIn(BaseModel):
    """Which boxes (ids, or labels; default all) to place in the plane, and how."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "labels": ["brick", "grass", "gravel"], "model": "efficientnet_lite0",
        "layer": "conv_head", "method": "tsne", "perplexity": None, "seed": 0,
        "descriptor": "gap"}]})

    box_ids: list[int] | None = None
    labels: list[str] | None = None
    model: str = Field("efficientnet_lite0", min_length=1, max_length=200)
    layer: str = Field(min_length=1, max_length=300)
    method: Literal["tsne", "pca"] = "tsne"
    perplexity: float | None = Field(None, gt=0, le=1000, description=(
        "t-SNE's effective neighbour count, in (0, (n − 1)/3] for n boxes; default: "
        "min(30, (n − 1)/3)."))
    n_iter: int = Field(500, ge=50, le=2000, description=(
        "t-SNE's optimisation steps after early exaggeration, 50..2000 (its time grows "
        "with them)."))
    seed: int = Field(0, ge=0, le=2**31 - 1)
    descriptor: Literal["gap", "grid"] = "gap"
    grid_size: int = Field(4, ge=1, le=16)
    mode: Literal["resize", "native"] = "resize"

    @model_validator(mode="after")
    def _one_source(self) -> EmbeddingIn:
        if self.box_ids is not None and self.labels is not None:
            raise ValueError("give either box_ids or labels, not both")
        return self


class Point(BaseModel):
    """One box in the plane."""

    box_id: int
    image_id: int
    label: str
    x: float
    y: float


class EmbeddingOut(BaseModel):
    """The points and a Plotly scatter (``customdata`` = ``[box_id, image_id]``)."""

    points: list[Point]
    method: str
    perplexity: float | None
    layer: str
    model: str
    descriptor: str
    figure: dict[str, Any]


@router.post("/embeddings", response_model=EmbeddingOut,
             responses={202: {"model": JobAccepted, "description": "Queued as a job."},
                        **ERRORS})
async def post_embedding(body: EmbeddingIn, store: StoreDep, settings: SettingsDep,
                         jobs: JobsDep, pool: PoolDep) -> Any:
    """t-SNE or PCA of one descriptor per box (a job when there are many boxes)."""
    return await pool.run(lambda cancelled: _embedding(body, store, settings, jobs, cancelled))


def _embedding(body: EmbeddingIn, store: StoreDep, settings: SettingsDep, jobs: JobsDep,
               cancelled: Cancelled) -> Any:
    if body.box_ids is not None:
        boxes = store.boxes(ids=body.box_ids)
    else:
        boxes = store.boxes(labels=body.labels) if body.labels is not None else store.boxes()
    model = model_info(body.model)
    precheck(settings, model, [body.layer], len(boxes))
    request = EmbeddingRequest(body.model, body.layer, body.method, body.perplexity, body.seed,
                               body.descriptor, body.grid_size, body.mode, body.n_iter)
    units = estimate_embedding(store, settings, model, boxes, request).units
    return answer_or_queue(jobs, settings, "embedding", units,
                           lambda progress, cancelled: embedding(
                               store, settings, model, boxes, request, progress, cancelled),
                           cancelled)
