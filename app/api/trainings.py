"""Training jobs: fine-tune a model on the boxes, follow its loss curve, cancel it, and
compare two models on held-out boxes ("what moved")."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from app.api.deps import ERRORS, MAX_ID, JobsDep, PoolDep, SettingsDep, StoreDep, load_model
from app.api.schemas import ErrorOut, JobOut, ModelName
from app.errors import InvalidInput, NotFound
from app.jobs import Cancelled
from app.service.analysis import resolve_groups
from app.service.moved import HeatmapChoice, default_layers, moved
from app.service.training import TrainingRequest, live_curve, start_training

__all__ = ["router", "TrainingIn", "TrainingAccepted", "TrainingOut", "MovedHeatmapIn", "MovedIn"]

router = APIRouter(prefix="/api/trainings", tags=["training"])

JobId = Annotated[str, Path(min_length=1, max_length=64)]
Id = Annotated[int, Field(ge=1, le=MAX_ID)]


class TrainingIn(BaseModel):
    """A fine-tuning job: the base model, the layer the loss acts on, the blocks that
    train (after ``after``, default: the layer's stage), the loss, the data and the split."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "model": "efficientnet_lite0",
                    "layer": "bn2",
                    "objective": "triplet",
                    "labels": ["brick", "grass", "gravel"],
                    "epochs": 3,
                    "lr": 0.0001,
                    "seed": 0,
                },
                {"objective": "mmd", "domains": ["photo", "sketch"], "layer": "bn2"},
            ]
        },
    )

    model: ModelName = None
    layer: str | None = Field(None, max_length=200, description="Default: the last feature map.")
    after: str | None = Field(
        None, max_length=200, description="Train the nodes after this one up to the layer."
    )
    objective: Literal["triplet", "npair", "contrastive", "mmd"] = "triplet"
    labels: list[str] | None = Field(None, description="Boxes of these labels (default: all).")
    box_ids: list[Id] | None = None
    domains: list[str] | None = Field(
        None, min_length=2, max_length=2, description="The two labels 'mmd' aligns."
    )
    holdout: float = Field(0.25, ge=0, lt=1, description="Share of images held out.")
    holdout_image_ids: list[Id] | None = None
    name: str | None = Field(None, max_length=80, description="Default: base-objective-time.")
    epochs: int = Field(3, ge=1, le=200)
    lr: float = Field(1e-4, gt=0, le=1)
    batch_size: int = Field(32, ge=2, le=512)
    crop_size: int = Field(0, ge=0, le=1024, description="0: the model's input size.")
    jitter: float = Field(0.15, ge=0, lt=1)
    seed: int = Field(0, ge=0, le=2**31 - 1)
    loss_weight: float = Field(1.0, ge=0, le=1000)
    cross_entropy: float = Field(0.0, ge=0, le=1000)
    head: bool | None = None
    margin: float = Field(0.2, ge=0, le=10)
    eval_layers: list[str] | None = None
    mode: Literal["resize", "native"] = "resize"


class TrainingAccepted(BaseModel):
    """The queued job, the name the model will be saved under, and the split's sizes."""

    job_id: str
    state: str = "queued"
    model: str
    trained: list[str]
    train_boxes: int
    held_out_boxes: int
    warnings: list[str]


class TrainingOut(JobOut):
    """A training job's state with its loss curve so far (or final, once done)."""

    curve: list[dict[str, Any]] = Field(default_factory=list)


class MovedHeatmapIn(BaseModel):
    """The heat maps of one image under both models: same method, layer and class."""

    model_config = ConfigDict(extra="forbid")

    method: str = Field("gradcam", min_length=1, max_length=50)
    layer: str | None = Field(None, max_length=300, description="Default: the matrices' layer.")
    image_id: Id | None = Field(
        None, description="Default: the image holding most of the compared boxes."
    )
    target: int | None = Field(
        None, ge=0, description="Default: the base model's top class on the image."
    )


class MovedIn(BaseModel):
    """Two models on the same boxes: a finished training job (its base, its model and its
    held-out boxes), or ``before``/``after`` with ``box_ids`` or ``labels``."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"job_id": "3f2c9a4e5b6d4c1e8f7a6b5c4d3e2f10", "measure": "euclidean"},
                {
                    "before": "efficientnet_lite0",
                    "after": "lite0-triplet",
                    "labels": ["brick", "grass", "gravel"],
                    "layers": ["blocks.5.0", "bn2"],
                    "permutations": 1000,
                    "heatmap": {"method": "gradcam", "layer": "bn2", "image_id": 12},
                },
            ]
        },
    )

    job_id: str | None = Field(None, max_length=64)
    before: ModelName = None
    after: ModelName = None
    box_ids: list[Id] | None = None
    labels: list[str] | None = None
    layers: list[str] | None = Field(None, description="Default: the training's eval layers.")
    layer: str | None = Field(None, description="The matrices' layer (default: the trained).")
    measure: str = Field("euclidean", max_length=50)
    permutations: int = Field(0, ge=0, le=100_000)
    scatter: Literal["pca", "tsne"] | None = Field("pca", description="None: no scatter.")
    heatmap: MovedHeatmapIn | None = Field(
        default_factory=MovedHeatmapIn, description="None: no heat maps."
    )
    mode: Literal["resize", "native"] = "resize"


@router.post(
    "",
    status_code=202,
    response_model=TrainingAccepted,
    responses={409: {"model": ErrorOut, "description": "A model of that name exists."}, **ERRORS},
)
def post_training(
    body: TrainingIn, store: StoreDep, settings: SettingsDep, jobs: JobsDep
) -> JSONResponse:
    """Queue a fine-tuning job (poll ``GET /api/trainings/{job_id}``)."""
    job_id, plan = start_training(store, settings, jobs, TrainingRequest(**body.model_dump()))
    answer = TrainingAccepted(
        job_id=job_id,
        model=plan.name,
        trained=plan.trained,
        train_boxes=len(plan.train_boxes),
        held_out_boxes=len(plan.held_out),
        warnings=plan.warnings,
    )
    return JSONResponse(status_code=202, content=answer.model_dump())


def _out(record: Any) -> TrainingOut:
    if record.kind != "training":
        raise NotFound(f"job {record.id} is a {record.kind} job, not a training")
    curve = live_curve(record.id)
    if curve is None:
        curve = (record.result or {}).get("curve", []) if isinstance(record.result, dict) else []
    return TrainingOut(**JobOut.of(record).model_dump(), curve=curve)


@router.get("/{job_id}", response_model=TrainingOut, responses=ERRORS)
def get_training(job_id: JobId, jobs: JobsDep) -> TrainingOut:
    """A training's state, progress, loss curve and (when done) result."""
    return _out(jobs.get(job_id))


@router.delete("/{job_id}", response_model=TrainingOut, responses=ERRORS)
def cancel_training(job_id: JobId, jobs: JobsDep) -> TrainingOut:
    """Stop a training at its next step (stopped while training: nothing is saved)."""
    _out(jobs.get(job_id))
    return _out(jobs.cancel(job_id))


@router.post("/moved", responses=ERRORS)
async def post_moved(
    body: MovedIn, store: StoreDep, settings: SettingsDep, jobs: JobsDep, pool: PoolDep
) -> Any:
    """Separation per layer under both models in one figure, both distance matrices with
    their p-values, both scatters, and one image's heat maps under both."""
    return await pool.run(lambda cancelled: _moved(body, store, settings, jobs, cancelled))


def _moved(
    body: MovedIn, store: StoreDep, settings: SettingsDep, jobs: JobsDep, cancelled: Cancelled
) -> dict[str, Any]:
    before, after, ids, layers, layer = body.before, body.after, body.box_ids, body.layers, None
    if body.job_id is not None:
        record = jobs.get(body.job_id)
        if record.kind != "training" or record.state != "done":
            raise InvalidInput(f"job {body.job_id} is not a finished training")
        result = record.result
        before, after = before or result["base"], after or result["model"]
        path = settings.models_dir / f"{result['model']}.json"
        data = json.loads(path.read_text())["training"]["data"] if path.is_file() else {}
        if ids is None and body.labels is None:
            ids = data.get("held_out_boxes") or None
        layer = result["layer"]
        layers = layers or [r["layer"] for r in result.get("held_out", {}).get("layers", [])]
    if before is None or after is None:
        raise InvalidInput("give job_id, or both before and after")
    if ids is not None and body.labels is not None:
        raise InvalidInput("give box_ids or labels, not both")
    base, tuned = load_model(settings, before), load_model(settings, after)
    if ids is not None:
        found = store.boxes(ids=ids)
        groups = {k: [b for b in found if b.label == k] for k in sorted({b.label for b in found})}
    else:
        groups = resolve_groups(store, None, body.labels)
    layers = layers or default_layers(tuned, layer)
    chosen = body.layer or layer or layers[-1]
    return moved(
        store,
        settings,
        base,
        tuned,
        groups,
        layers,
        chosen,
        body.measure,
        body.mode,
        cancelled,
        body.permutations,
        scatter=body.scatter,
        heatmap=HeatmapChoice(**body.heatmap.model_dump()) if body.heatmap else None,
    )
