"""Heat maps of a stored image with per-box localisation scores, as JSON, CSV or a figure."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import PlainTextResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from app.api.deps import ERRORS, QUEUED, AnalysesDep, ImageDep, Plan, PoolDep, StoreDep, load_model
from app.api.schemas import ModelName
from app.config import Settings
from app.engine.models import LoadedModel
from app.service.heatmaps import (
    HeatmapRequest,
    estimate_heatmap_work,
    heatmap_png,
    heatmap_result,
    scores_csv,
)
from app.store import Store

__all__ = ["router", "HeatmapIn", "HeatmapOut", "MethodOut"]

router = APIRouter(prefix="/api", tags=["heatmaps"])


class HeatmapIn(BaseModel):
    """What heat map to compute for which image."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "image_id": 1,
                    "layer": "conv_head",
                    "method": "gradcam",
                    "target": None,
                    "mode": "resize",
                    "normalise": "minmax",
                }
            ]
        },
    )

    image_id: int = Field(ge=1)
    model: ModelName = None
    layer: str = Field(min_length=1, max_length=300)
    method: str = Field("gradcam", min_length=1, max_length=50)
    target: int | None = Field(None, ge=0, description="Class to explain; default: the top one.")
    mode: Literal["resize", "native"] = "resize"
    normalise: Literal["none", "minmax", "percentile"] = Field(
        "minmax", description="Display scaling of the figure; the scores use the raw map."
    )
    channel: int | None = Field(None, ge=0, description="For method 'channel'.")
    options: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            "The method's options (e.g. Score-CAM's max_channels, batch_size); "
            "GET /api/heatmap-methods shows each method's schema."
        ),
    )


class Prediction(BaseModel):
    """One class with its probability."""

    index: int
    label: str
    probability: float


class ScoredBox(BaseModel):
    """A box with its localisation scores (``null`` where a score is undefined)."""

    id: int
    x: float
    y: float
    w: float
    h: float
    label: str
    scores: dict[str, float | None]


class HeatmapOut(BaseModel):
    """Per-box scores, the prediction, the class explained and a Plotly figure."""

    image_id: int
    model: str
    layer: str
    method: str
    target: int | None
    target_label: str | None
    mode: str
    normalise: str
    prediction: list[Prediction]
    score_names: list[str]
    boxes: list[ScoredBox]
    heat_range: list[float]
    figure: dict[str, Any]
    warnings: list[str] = Field(
        default_factory=list,
        description=("What limits the scores: a 1×1 layer, boxes smaller than one feature cell."),
    )


class MethodOut(BaseModel):
    """A heat-map method: does it explain a class, does it need gradients."""

    name: str
    needs_target: bool
    needs_gradients: bool
    options: dict[str, Any]


def _options(body: HeatmapIn) -> tuple[tuple[str, Any], ...]:
    """The method's checked options; an unknown method or option is a 4xx here."""
    from app.engine.cams import method_options

    return tuple(sorted(method_options(body.method, body.options).model_dump().items()))


def _request(body: HeatmapIn, model: LoadedModel) -> HeatmapRequest:
    """The service's request for ``model`` (the body's, or the server's default)."""
    return HeatmapRequest(
        model.spec.name,
        body.layer,
        body.method,
        body.target,
        body.mode,
        body.normalise,
        body.channel,
        _options(body),
    )


def _compute(body: HeatmapIn, store: StoreDep) -> dict[str, Any]:
    image = store.get_image(body.image_id, counts=False)
    model = load_model(store.settings, body.model)
    return heatmap_result(
        store, model, image, _request(body, model), store.boxes(image_id=image.id)
    )


@router.post("/heatmaps", response_model=HeatmapOut, responses={**QUEUED, **ERRORS})
async def post_heatmap(body: HeatmapIn, analyses: AnalysesDep) -> Any:
    """A heat map of one image, scored against all of its boxes (a job when the work is
    large: Score-CAM over many channels, large native inputs)."""
    _options(body)  # unknown method or options: 4xx before queueing
    return await analyses.answer("heatmap", lambda store, settings: _plan(body, store, settings))


def _plan(body: HeatmapIn, store: Store, settings: Settings) -> Plan:
    image = store.get_image(body.image_id, counts=False)
    model = load_model(settings, body.model)
    request = _request(body, model)
    boxes = store.boxes(image_id=image.id)
    return Plan(
        model,
        [],  # the layer is checked by the heat map itself (a non-4-D node is a 422)
        0,
        lambda: estimate_heatmap_work(store, settings, model, image, request, boxes),
        lambda progress, cancelled: heatmap_result(
            store, model, image, request, boxes, progress, cancelled
        ),
        threshold=settings.heatmap_job_threshold,
    )


@router.post(
    "/heatmaps/png",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}, **ERRORS},
)
async def post_heatmap_png(
    body: HeatmapIn,
    store: StoreDep,
    pool: PoolDep,
    alpha: Annotated[float, Query(ge=0.0, le=1.0, description="Heat-map opacity.")] = 0.5,
) -> Response:
    """The overlay as a PNG: the heat map over the image, boxes captioned with their energy."""
    _options(body)  # unknown method or options: 4xx before queueing

    def work(_cancelled: object) -> bytes:
        image = store.get_image(body.image_id, counts=False)
        model = load_model(store.settings, body.model)
        return heatmap_png(
            store, model, image, _request(body, model), store.boxes(image_id=image.id), alpha
        )

    return Response(await pool.run(work), media_type="image/png")


@router.post("/heatmaps/scores.csv", responses={200: {"content": {"text/csv": {}}}, **ERRORS})
async def post_heatmap_csv(body: HeatmapIn, store: StoreDep, pool: PoolDep) -> PlainTextResponse:
    """The same request's per-box scores as CSV."""
    _options(body)  # unknown method or options: 4xx before queueing
    text = await pool.run(lambda _cancelled: scores_csv(_compute(body, store)))
    return PlainTextResponse(text, media_type="text/csv")


@router.get(
    "/images/{image_id}/scores.csv", responses={200: {"content": {"text/csv": {}}}, **ERRORS}
)
async def get_scores_csv(
    image: ImageDep,
    store: StoreDep,
    pool: PoolDep,
    layer: Annotated[str, Query(min_length=1, max_length=300)],
    model: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=200,
            description=("Default: the server's model (FEATUREGAP_DEFAULT_MODEL)."),
        ),
    ] = None,
    method: Annotated[str, Query(min_length=1, max_length=50)] = "gradcam",
    target: Annotated[int | None, Query(ge=0)] = None,
) -> PlainTextResponse:
    """Per-box localisation scores of an image as CSV."""
    body = HeatmapIn(
        image_id=image.id,
        model=model,
        layer=layer,
        method=method,
        target=target,
        normalise="minmax",
        channel=None,
    )
    text = await pool.run(lambda _cancelled: scores_csv(_compute(body, store)))
    return PlainTextResponse(text, media_type="text/csv")


@router.get("/heatmap-methods", response_model=list[MethodOut])
def list_heatmap_methods() -> list[MethodOut]:
    """Every heat-map method the engine offers."""
    from app.engine.cams import METHODS

    return [
        MethodOut(
            name=name,
            needs_target=cls.needs_target,
            needs_gradients=cls.needs_gradients,
            options=cls.Options.model_json_schema(),
        )
        for name, cls in METHODS.items()
    ]
