"""How many feature cells a box covers at a layer, and the warnings that follow from it.

A descriptor of a box smaller than one cell of the feature map is an interpolation of its
neighbourhood, and at a 1×1 layer every box of an image sees the same single value: scores
and distances there compare images, not boxes. Users are told so in the answer.
"""

from __future__ import annotations

from collections.abc import Sequence

from app.engine.layers import LayerInfo
from app.engine.models import LoadedModel
from app.engine.preprocess import InputMode, input_size
from app.store import BoxRecord, ImageRecord

__all__ = ["cells_per_box", "resolution_warnings"]


def cells_per_box(
    model: LoadedModel,
    layer: LayerInfo,
    image: ImageRecord,
    box: BoxRecord,
    mode: InputMode,
    native_max_side: int,
) -> tuple[float, float]:
    """The box's width and height in cells of ``layer``'s feature map for this image."""
    in_h, in_w = input_size(
        image.width, image.height, model.spec, mode, native_max_side, model.max_stride
    )
    size = model.spec.input_size
    cells_w = layer.width * in_w / size
    cells_h = layer.height * in_h / size
    return box.w / image.width * cells_w, box.h / image.height * cells_h


def resolution_warnings(
    model: LoadedModel,
    layer: LayerInfo,
    images: dict[int, ImageRecord],
    boxes: Sequence[BoxRecord],
    mode: InputMode,
    native_max_side: int,
) -> list[str]:
    """Warnings about a layer too coarse for the boxes (empty when all is well)."""
    if layer.height == 1 and layer.width == 1:
        return [
            f"layer {layer.name!r} is 1×1: every box of an image sees the same single "
            "value, so its scores and distances compare images, not boxes; choose an "
            "earlier layer"
        ]
    cells = [
        cells_per_box(model, layer, images[b.image_id], b, mode, native_max_side) for b in boxes
    ]
    small = [(w, h) for w, h in cells if w < 1 or h < 1]
    if not small:
        return []
    w, h = min(small, key=lambda c: c[0] * c[1])
    return [
        f"{len(small)} of {len(boxes)} boxes are smaller than one feature cell of layer "
        f"{layer.name!r} ({layer.height}×{layer.width} at input size; the smallest covers "
        f"{w:.2f}×{h:.2f} cells): their descriptors interpolate the neighbourhood, not the "
        "object; choose an earlier layer or draw larger boxes"
    ]
