"""Models the service knows, their feature-map layers and their class names."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from app.api.deps import ModelDep, SettingsDep
from app.api.schemas import FromRecord
from app.engine import models as engine_models
from app.engine.layers import list_layers as engine_layers

__all__ = ["router"]

router = APIRouter(prefix="/api/models", tags=["models"])


class ModelOut(FromRecord):
    """A model with its preprocessing."""

    name: str
    architecture: str
    source: str
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    num_classes: int
    description: str


class LayerOut(FromRecord):
    """A layer whose output is a feature map, with its shape at the model's input size."""

    name: str
    channels: int
    height: int
    width: int


@router.get("", response_model=list[ModelOut])
def list_models(settings: SettingsDep) -> list[ModelOut]:
    """Every model the service can load."""
    return [ModelOut.of(spec) for spec in engine_models.list_models(settings.models_dir)]


@router.get("/{model}/layers", response_model=list[LayerOut])
def list_layers(model: ModelDep) -> list[LayerOut]:
    """The model's feature-map layers in graph order, with channels and size."""
    return [LayerOut.of(layer) for layer in engine_layers(model)]


class ClassOut(BaseModel):
    """One output class of a model: its index (a heat map's ``target``) and name."""

    index: int
    name: str


@router.get("/{model}/classes", response_model=list[ClassOut])
def list_classes(model: ModelDep) -> list[ClassOut]:
    """The model's class names in output order (for picking a heat map's target by name)."""
    return [ClassOut(index=i, name=name) for i, name in enumerate(model.spec.class_names)]
