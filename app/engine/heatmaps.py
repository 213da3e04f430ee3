"""Heat maps at image size: one layer's map, reduced or class-weighted, on the image grid.

:func:`compute_heatmap` preprocesses the image as the model expects, computes a method of
:mod:`app.engine.cams` at the layer's resolution and brings only that ``h×W`` map to the
image's ``H×W`` grid (bilinear, ``align_corners=False``), never the ``C×H×W`` features.
The values stay raw: min–max scaling per image makes maps of different images
incomparable, so :func:`normalise` is a display option applied by whoever shows the map.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import torch

from app.engine.cams import (
    METHODS,
    CamOptions,
    Cancelled,
    Progress,
    cam_map,
    list_methods,
    reduce_channels,
)
from app.engine.models import LoadedModel
from app.engine.preprocess import DEFAULT_NATIVE_MAX_SIDE, InputMode, to_input
from app.engine.regions import upsample_to_image
from app.images import DecodedImage

__all__ = [
    "METHODS",
    "HeatMap",
    "cam_map",
    "compute_heatmap",
    "list_methods",
    "normalise",
    "reduce_channels",
]


@dataclass(frozen=True)
class HeatMap:
    """One heat map of one image.

    Attributes:
        values: ``H×W`` float32 at the image's size, raw (not normalised).
        method: the method's name in :data:`METHODS`.
        target: the class explained, ``None`` for channel reductions.
        target_label: that class's name, when the model has class names.
        layer: the graph node the map comes from.
    """

    values: torch.Tensor
    method: str
    target: int | None
    target_label: str | None
    layer: str


def compute_heatmap(
    model: LoadedModel,
    image: DecodedImage,
    layer: str,
    method: str,
    target: int | None = None,
    mode: InputMode = "resize",
    channel: int | None = None,
    *,
    options: CamOptions | None = None,
    native_max_side: int = DEFAULT_NATIVE_MAX_SIDE,
    cancelled: Cancelled | None = None,
    progress: Progress | None = None,
) -> HeatMap:
    """Compute a heat map of ``image`` at ``layer`` and bring it to the image's size.

    Args:
        model: the loaded model (its module, preprocessing and class names).
        image: the decoded image.
        layer: a graph node with a 4-D output.
        method: a name in :data:`METHODS` (``mean``, ``l2``, ``max``, ``channel``, ``cam``,
            ``gradcam``, ``gradcampp``, ``scorecam``, ``layercam``).
        target: the class to explain; ``None`` takes the top prediction.
        mode: ``resize`` to the model's input size, or ``native`` (the image's own size).
        channel: the channel for ``method="channel"``.
        options: Score-CAM options (``max_channels``, ``batch_size``,
            ``max_batch_pixels``); ``channel`` wins over ``options.channel``.
        native_max_side: the longest input side in ``native`` mode (the caller's
            ``Settings.native_max_side``).
        cancelled: asked between Score-CAM's batches; ``True`` stops the call.
        progress: told ``(fraction, message)`` at the method's steps (Score-CAM: before
            each batch); see :func:`~app.engine.cams.cam_map`.

    Returns:
        The raw map at ``image.height × image.width``.

    Raises:
        KeyError: unknown method or layer (the message lists valid ones).
        ValueError: a layer without a 4-D output, a target out of range, a missing
            channel, or ``cam`` on a layer it does not apply to.
        InterruptedError: ``cancelled`` returned ``True``.
    """
    chosen = options or CamOptions()
    if channel is not None:
        chosen = replace(chosen, channel=channel)
    device = next(model.module.parameters()).device
    x = to_input(
        image.pixels,
        model.spec,
        mode=mode,
        native_max_side=native_max_side,
        max_stride=model.max_stride,
    )[None].to(device)
    small, explained = cam_map(
        model.module,
        x,
        layer,
        method,
        target,
        options=chosen,
        cancelled=cancelled,
        progress=progress,
    )
    values = upsample_to_image(small.float().cpu(), (image.width, image.height))
    names = model.spec.class_names
    label = names[explained] if explained is not None and explained < len(names) else None
    return HeatMap(values.contiguous(), method, explained, label, layer)


def normalise(
    values: torch.Tensor,
    how: Literal["none", "minmax", "percentile"],
    percentile: float = 99.0,
) -> torch.Tensor:
    """Scale a map for display (a view option: scores use the raw map).

    Args:
        values: the raw map.
        how: ``none`` (a copy of the map), ``minmax`` (to ``[0, 1]``; a constant map gives
            zeros), or ``percentile`` (divide by the ``percentile``-th percentile of
            ``|values|`` and clip to ``[-1, 1]``: keeps the sign and zero, and one hot pixel
            cannot wash out the rest, as Captum's visualisation does).
        percentile: for ``how="percentile"``, in ``(0, 100]``.

    Returns:
        A new tensor of the same shape and dtype.

    Raises:
        ValueError: unknown ``how`` or ``percentile`` out of range.
    """
    if how == "none":
        return values.clone()
    if how == "minmax":
        if (
            values.device.type == "cpu"
            and values.dtype in (torch.float32, torch.float64)
            and not values.requires_grad
        ):
            # numpy: the same float ops, element by element, without torch's parallel regions
            # (each waits for a second core on a busy machine)
            array = values.numpy()
            low_a, high_a = array.min(), array.max()
            if high_a == low_a:
                return torch.zeros_like(values)
            return torch.from_numpy((array - low_a) / (high_a - low_a))
        low, high = values.min(), values.max()
        if high == low:
            return torch.zeros_like(values)
        return (values - low) / (high - low)
    if how == "percentile":
        if not 0.0 < percentile <= 100.0:
            raise ValueError(f"percentile must lie in (0, 100], got {percentile}")
        magnitudes = values.detach().abs().cpu().double().numpy()
        scale = float(np.percentile(magnitudes, percentile))
        if scale == 0.0:
            return torch.zeros_like(values)
        return (values / scale).clamp(-1.0, 1.0)
    raise ValueError(f"unknown normalisation {how!r}; use none, minmax or percentile")
