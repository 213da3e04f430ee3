"""Intra- vs inter-label distances across layers (one forward pass for all layers)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from app.api.deps import ERRORS, QUEUED, AnalysesDep, Plan, load_model, service_request
from app.api.schemas import BoxesAtLayerIn
from app.config import Settings
from app.engine.measures import Measure, get_measure
from app.service.analysis import (
    SeparationRequest,
    estimate_separation,
    resolve_groups,
    separation_profile,
)
from app.store import Store

__all__ = ["router", "SeparationIn", "SeparationOut"]

router = APIRouter(prefix="/api", tags=["analysis"])


class SeparationIn(BoxesAtLayerIn):
    """Labels to separate (default: all) and the layers to compare."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "labels": ["brick", "grass", "gravel"],
                    "layers": ["blocks.2.0.bn2", "blocks.5.1.add", "conv_head"],
                    "measure": "euclidean",
                    "descriptor": "gap",
                }
            ]
        }
    )

    labels: list[str] | None = Field(None, description="Default: every label with boxes.")
    layers: list[str] = Field(min_length=1)
    measure: str = Field(
        "euclidean",
        min_length=1,
        max_length=50,
        description="A registered measure (GET /api/measures).",
    )
    options: dict[str, Any] = Field(default_factory=dict, description="The measure's options.")
    descriptor: Literal["gap", "grid", "pixels"] | None = Field(
        None,
        description=(
            "Default: what the measure consumes; 'pixels' compares boxes' sets of grid rows."
        ),
    )


class LayerSeparationOut(BaseModel):
    """One layer's separation summary (``ratio = inter / intra``; above 1 separates)."""

    layer: str
    intra: float | None
    inter: float | None
    ratio: float | None
    silhouette: float | None
    per_label: dict[str, dict[str, float | None]]


class SeparationOut(BaseModel):
    """The per-layer summaries and a Plotly line figure."""

    layers: list[LayerSeparationOut]
    measure: str
    descriptor: str
    model: str
    sizes: dict[str, int]
    figure: dict[str, Any]


@router.post("/separation", response_model=SeparationOut, responses={**QUEUED, **ERRORS})
async def post_separation(body: SeparationIn, analyses: AnalysesDep) -> Any:
    """Intra/inter/ratio/silhouette per layer (a job when the work is large)."""
    measure = get_measure(body.measure, **body.options)  # unknown: 4xx naming the known
    return await analyses.answer(
        "separation", lambda store, settings: _plan(body, measure, store, settings)
    )


def _plan(body: SeparationIn, measure: Measure, store: Store, settings: Settings) -> Plan:
    groups = resolve_groups(store, None, body.labels)
    model = load_model(settings, body.model)
    layers = list(dict.fromkeys(body.layers))
    request = service_request(
        SeparationRequest,
        body,
        model=model.spec.name,
        layers=layers,
        descriptor=body.descriptor or measure.needs,
    )
    return Plan(
        model,
        layers,
        sum(len(g) for g in groups.values()),
        lambda: estimate_separation(store, settings, model, request, groups),
        lambda progress, cancelled: separation_profile(
            store, settings, model, groups, request, progress, cancelled
        ),
    )
