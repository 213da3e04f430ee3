"""Budgets of analysis requests from what the store and the model know, before any work.

Joins :mod:`app.service.budgets` (torch-free arithmetic) with the facts it needs: the
model's forward cost per input pixel and the images' sizes (:func:`extraction_of`, for the
estimates over stored boxes that :mod:`app.service.analysis` makes). Each ``*_budget``
function checks the estimate against ``max_request_bytes`` and returns it; the routes call
the estimates before queueing (so a refusal is a 413, never a failed job) and the service
functions call them again before extraction (the CLI and jobs go through them).
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn

from app.config import Settings
from app.engine.cams.scorecam import scorecam_batch
from app.engine.graph import TRACE_LOCK
from app.engine.layers import list_layers
from app.engine.models import LoadedModel
from app.service.budgets import (
    Estimate,
    Extraction,
    ModelCost,
    check_budget,
    estimate_heatmap,
    estimate_prediction,
    input_pixels,
)
from app.store import BoxRecord, ImageRecord, Store

__all__ = ["extraction_of", "heatmap_budget", "model_cost", "prediction_budget"]

# Measured on EfficientNet-Lite0 (peak RSS growth of one forward pass in a fresh process,
# 224² and 1024×768): inference mode holds about 4.2 × the largest layer output (402 bytes a
# pixel), a pass with gradients to the input about 1.2 × all layer outputs together (1,769
# bytes a pixel). Rounded up.
_FORWARD_LARGEST = 4.5
_GRADIENT_ALL = 1.2
_INPUT_BYTES_PER_PIXEL = 3 * 4


_COSTS: dict[tuple[str, str], ModelCost] = {}


def model_cost(model: LoadedModel) -> ModelCost:
    """Bytes and multiply-adds per input pixel of a forward pass of ``model``, from its
    layers' output sizes at its input size (cached per model and weights)."""
    key = (model.spec.name, model.weights_sha256)
    found = _COSTS.get(key)
    if found is not None:
        return found
    layers = list_layers(model)
    size = model.spec.input_size
    pixels = size * size
    outputs = [info.channels * info.height * info.width * 4 for info in layers] or [0]
    forward = _FORWARD_LARGEST * max(outputs) / pixels + _INPUT_BYTES_PER_PIXEL
    gradient = _GRADIENT_ALL * sum(outputs) / pixels + _INPUT_BYTES_PER_PIXEL
    found = _COSTS[key] = ModelCost(forward, gradient, size, _macs(model) / pixels)
    return found


def _macs(model: LoadedModel) -> int:
    """Multiply-adds of one forward pass at the model's input size: every convolution's
    output size (from the layer list) × its kernel's weights per output, and every linear
    layer's weights. Convolutions that are no graph node of their own are not counted (on
    EfficientNet-Lite0 every one is: 385,187,552, as torch's FlopCounterMode counts)."""
    shapes = {info.name: info for info in list_layers(model)}
    total = 0
    with TRACE_LOCK.shared():  # ``module.weight`` is a Proxy while another thread traces
        for name, module in model.module.named_modules():
            if isinstance(module, nn.Conv2d) and name in shapes:
                out = shapes[name]
                per_output = module.weight[0].numel()  # in_channels / groups × kernel
                total += out.channels * out.height * out.width * per_output
            elif isinstance(module, nn.Linear):
                total += module.weight.numel()
    return total


def _sizes(store: Store, image_ids: Iterable[int]) -> list[tuple[int, int]]:
    return [(r.width, r.height) for r in store.get_images(image_ids).values()]  # one query


def extraction_of(
    store: Store, settings: Settings, model: LoadedModel, boxes: Iterable[BoxRecord], mode: str
) -> Extraction:
    """The forward passes of a request over ``boxes`` in ``mode``: the model's cost and the
    sizes of the images the boxes lie on."""
    sizes = _sizes(store, {b.image_id for b in boxes})
    return Extraction(model_cost(model), mode, sizes, settings.native_max_side)


def heatmap_budget(
    settings: Settings,
    model: LoadedModel,
    image: ImageRecord,
    *,
    method: str,
    mode: str,
    batch_size: int = 32,
    max_batch_pixels: int = 32 * 224 * 224,
    layer: str | None = None,
    max_channels: int = 64,
) -> Estimate:
    """The estimate of one heat map of ``image``, refused past ``max_request_bytes``; its
    units count Score-CAM's passes when ``layer`` is given.

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
            channels=_channels(model, layer),
            max_channels=max_channels,
        ),
    )


def _channels(model: LoadedModel, layer: str | None) -> int:
    """The layer's channels; 0 for no layer or one without a 4-D output (the heat map's own
    check names the error then)."""
    return next((info.channels for info in list_layers(model) if info.name == layer), 0)


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
