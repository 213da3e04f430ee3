"""t-SNE or PCA of box descriptors at one layer, as points and a Plotly scatter."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from app.api.deps import ERRORS, QUEUED, AnalysesDep, Plan, load_model, service_request
from app.api.schemas import BoxesAtLayerIn
from app.config import Settings
from app.service.analysis import EmbeddingRequest, embedding, estimate_embedding
from app.store import Store

__all__ = ["router", "EmbeddingIn", "EmbeddingOut"]

router = APIRouter(prefix="/api", tags=["analysis"])


class EmbeddingIn(BoxesAtLayerIn):
    """Which boxes (ids, or labels; default all) to place in the plane, and how."""

    exclusive = ("box_ids", "labels")
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "labels": ["brick", "grass", "gravel"],
                    "layer": "conv_head",
                    "method": "tsne",
                    "perplexity": None,
                    "seed": 0,
                    "descriptor": "gap",
                }
            ]
        }
    )

    box_ids: list[int] | None = None
    labels: list[str] | None = None
    layer: str = Field(min_length=1, max_length=300)
    method: Literal["tsne", "pca"] = "tsne"
    perplexity: float | None = Field(
        None,
        gt=0,
        le=1000,
        description=(
            "t-SNE's effective neighbour count, in (0, (n − 1)/3] for n boxes; default: "
            "min(30, (n − 1)/3)."
        ),
    )
    n_iter: int = Field(
        500,
        ge=50,
        le=2000,
        description=(
            "t-SNE's optimisation steps after early exaggeration, 50..2000 (its time grows "
            "with them)."
        ),
    )
    seed: int = Field(0, ge=0, le=2**31 - 1)
    descriptor: Literal["gap", "grid"] = "gap"


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


@router.post("/embeddings", response_model=EmbeddingOut, responses={**QUEUED, **ERRORS})
async def post_embedding(body: EmbeddingIn, analyses: AnalysesDep) -> Any:
    """t-SNE or PCA of one descriptor per box (a job when there are many boxes)."""
    return await analyses.answer("embedding", lambda store, settings: _plan(body, store, settings))


def _plan(body: EmbeddingIn, store: Store, settings: Settings) -> Plan:
    boxes = store.boxes(ids=body.box_ids, labels=body.labels)  # neither: every box
    model = load_model(settings, body.model)
    request = service_request(EmbeddingRequest, body, model=model.spec.name)
    return Plan(
        model,
        [body.layer],
        len(boxes),
        lambda: estimate_embedding(store, settings, model, boxes, request),
        lambda progress, cancelled: embedding(
            store, settings, model, boxes, request, progress, cancelled
        ),
    )
