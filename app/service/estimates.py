"""Budgets of analysis requests from what the store and the model know, before any work.

Joins :mod:`app.service.budgets` (torch-free arithmetic) with the facts it needs: the
layers' channels, the model's forward cost per input pixel and the images' sizes. Each
``*_budget`` function checks the estimate against ``max_request_bytes`` and returns it; the
routes call them before queueing (so a refusal is a 413, never a failed job) and the
service functions call them again before extraction (the CLI and jobs go through them).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from app.config import Settings
from app.engine.cams.scorecam import scorecam_batch
from app.engine.layers import check_layer, list_layers
from app.engine.models import LoadedModel
from app.service.budgets import (
    Estimate,
    ModelCost,
    check_budget,
    estimate_distances,
    estimate_embedding,
    estimate_heatmap,
    estimate_prediction,
    estimate_separation,
    input_pixels,
)
from app.store import BoxRecord, ImageRecord, Store

__all__ = [
    "distance_budget",
    "embedding_budget",
    "heatmap_budget",
    "model_cost",
    "prediction_budget",
    "separation_budget",
]

# Measured on EfficientNet-Lite0 (peak RSS growth of one forward pass in a fresh process,
# 224² and 1024×768): inference mode holds about 4.2 × the largest layer output (402 bytes a
# pixel), a pass with gradients to the input about 1.2 × all layer outputs together (1,769
# bytes a pixel). Rounded up.
_FORWARD_LARGEST = 4.5
_GRADIENT_ALL = 1.2
_INPUT_BYTES_PER_PIXEL = 3 * 4


def model_cost(model: LoadedModel) -> ModelCost:
    """Bytes per input pixel of a forward pass of ``model``, from its layers' output sizes
    at its input size (cached with the layer list)."""
    layers = list_layers(model)
    size = model.spec.input_size
    pixels = size * size
    outputs = [info.channels * info.height * info.width * 4 for info in layers] or [0]
    forward = _FORWARD_LARGEST * max(outputs) / pixels + _INPUT_BYTES_PER_PIXEL
    gradient = _GRADIENT_ALL * sum(outputs) / pixels + _INPUT_BYTES_PER_PIXEL
    return ModelCost(forward, gradient, size)


def _sizes(store: Store, image_ids: Iterable[int]) -> list[tuple[int, int]]:
    return [(r.width, r.height) for r in store.get_images(image_ids).values()]  # one query


def _boxes_budget(
    estimate: Callable[..., Estimate],
    store: Store,
    settings: Settings,
    model: LoadedModel,
    boxes: Iterable[BoxRecord],
    **keywords: object,
) -> Estimate:
    """``estimate`` of a request over ``boxes``, given the model's cost, the boxes' image
    sizes and ``native_max_side`` on top of ``keywords``, refused past
    ``max_request_bytes``.

    Raises:
        LimitExceeded: past the budget.
    """
    return check_budget(
        settings,
        estimate(
            cost=model_cost(model),
            image_sizes=_sizes(store, {b.image_id for b in boxes}),
            native_max_side=settings.native_max_side,
            **keywords,
        ),
    )


def distance_budget(
    store: Store,
    settings: Settings,
    model: LoadedModel,
    *,
    layer: str,
    measure: str,
    options: dict[str, object],
    descriptor: str,
    grid_size: int,
    groups: dict[str, list[BoxRecord]],
    permutations: int,
    bootstrap: int,
    mode: str,
    units: int,
) -> Estimate:
    """The estimate of a distances request, refused past ``max_request_bytes``.

    Raises:
        KeyError: an unknown layer. LimitExceeded: past the budget.
    """
    return _boxes_budget(
        estimate_distances,
        store,
        settings,
        model,
        [b for members in groups.values() for b in members],
        measure=measure,
        options=options,
        descriptor=descriptor,
        channels=check_layer(model, layer).channels,
        grid_size=grid_size,
        group_sizes=[len(m) for m in groups.values()],
        permutations=permutations,
        bootstrap=bootstrap,
        mode=mode,
        units=units,
    )


def separation_budget(
    store: Store,
    settings: Settings,
    model: LoadedModel,
    *,
    layers: Sequence[str],
    measure: str,
    options: dict[str, object],
    descriptor: str,
    grid_size: int,
    boxes: Sequence[BoxRecord],
    mode: str,
    units: int,
) -> Estimate:
    """The estimate of a separation request, refused past ``max_request_bytes``.

    Raises:
        KeyError: an unknown layer. LimitExceeded: past the budget.
    """
    return _boxes_budget(
        estimate_separation,
        store,
        settings,
        model,
        boxes,
        measure=measure,
        options=options,
        descriptor=descriptor,
        channels=[check_layer(model, layer).channels for layer in layers],
        grid_size=grid_size,
        n_boxes=len(boxes),
        mode=mode,
        units=units,
    )


def embedding_budget(
    store: Store,
    settings: Settings,
    model: LoadedModel,
    *,
    layer: str,
    method: str,
    descriptor: str,
    grid_size: int,
    boxes: Sequence[BoxRecord],
    mode: str,
    units: int,
) -> Estimate:
    """The estimate of an embedding request, refused past ``max_request_bytes``.

    Raises:
        KeyError: an unknown layer. LimitExceeded: past the budget.
    """
    return _boxes_budget(
        estimate_embedding,
        store,
        settings,
        model,
        boxes,
        method=method,
        descriptor=descriptor,
        channels=check_layer(model, layer).channels,
        grid_size=grid_size,
        n_boxes=len(boxes),
        mode=mode,
        units=units,
    )


def heatmap_budget(
    settings: Settings,
    model: LoadedModel,
    image: ImageRecord,
    *,
    method: str,
    mode: str,
    batch_size: int = 32,
    max_batch_pixels: int = 32 * 224 * 224,
) -> Estimate:
    """The estimate of one heat map of ``image``, refused past ``max_request_bytes``.

    Raises:
        LimitExceeded: past the budget.
    """
    cost = model_cost(model)
    batch_pixels = 0
    if method == "scorecam":
        pixels = input_pixels(cost, mode, image.width, image.height, settings.native_max_side)
        side = max(1, int(pixels**0.5))
        batch_pixels = (
            scorecam_batch(side, max(1, pixels // side), batch_size, max_batch_pixels) * pixels
        )
    return check_budget(
        settings,
        estimate_heatmap(
            cost=cost,
            method=method,
            width=image.width,
            height=image.height,
            mode=mode,
            native_max_side=settings.native_max_side,
            scorecam_batch_pixels=batch_pixels,
        ),
    )


def prediction_budget(
    settings: Settings, model: LoadedModel, image: ImageRecord, mode: str
) -> Estimate:
    """The estimate of a prediction of ``image``, refused past ``max_request_bytes``.

    Raises:
        LimitExceeded: past the budget.
    """
    return check_budget(
        settings,
        estimate_prediction(
            cost=model_cost(model),
            width=image.width,
            height=image.height,
            mode=mode,
            native_max_side=settings.native_max_side,
        ),
    )
