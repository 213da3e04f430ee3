"""Top-k predictions for an image or a box crop."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from app.boxes import Box, check_box
from app.engine.graph import TRACE_LOCK
from app.engine.models import LoadedModel
from app.engine.preprocess import DEFAULT_NATIVE_MAX_SIDE, InputMode, to_input
from app.images import DecodedImage

__all__ = ["Prediction", "predict", "predict_from_logits"]


@dataclass(frozen=True)
class Prediction:
    """One class, its name and its softmax probability."""

    index: int
    label: str
    probability: float


def predict_from_logits(model: LoadedModel, logits: torch.Tensor, k: int = 5) -> list[Prediction]:
    """The ``k`` most probable classes from a logits vector.

    Raises:
        ValueError: ``k`` < 1 or logits that are not one vector.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if logits.dim() != 1:
        raise ValueError(f"expected a logits vector, got shape {tuple(logits.shape)}")
    probs = torch.softmax(logits.double(), dim=0)
    top = torch.topk(probs, min(k, probs.numel()))
    names = model.spec.class_names
    return [
        Prediction(int(i), names[int(i)] if int(i) < len(names) else str(int(i)), float(p))
        for p, i in zip(top.values, top.indices, strict=True)
    ]


def predict(
    model: LoadedModel,
    image: DecodedImage,
    k: int = 5,
    box: Box | None = None,
    mode: InputMode = "resize",
    native_max_side: int = DEFAULT_NATIVE_MAX_SIDE,
) -> list[Prediction]:
    """Top-``k`` classes for ``image``, or for the crop of ``box`` (clipped to the image).

    ``native_max_side`` is the longest input side in ``native`` mode (the caller's
    ``Settings.native_max_side``).

    Raises:
        ValueError: a bad box or ``k``.
    """
    pixels = image.pixels
    if box is not None:
        b = check_box(box, image.width, image.height)
        pixels = pixels.crop((round(b.x), round(b.y), round(b.x + b.w), round(b.y + b.h)))
    x = to_input(pixels, model.spec, mode, native_max_side, model.max_stride)
    with torch.inference_mode(), TRACE_LOCK.shared():
        logits = model.module(x[None])[0]
    return predict_from_logits(model, logits, k)
