"""Boxes in image pixels: the type, its validation against an image, and its pixel span.

Torch-free, so the store, the formats and the engine all use the same box. A box that
sticks out of the image is clipped to it (annotation tools often drag past an edge), and
must still be at least one pixel wide and high after clipping; non-finite values, zero or
negative size, and boxes that miss the image are rejected.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Box", "check_box", "pixel_span"]


@dataclass(frozen=True)
class Box:
    """A box in image pixels: origin top-left, ``x`` to the right, ``y`` down."""

    x: float
    y: float
    w: float
    h: float


def check_box(box: Box, width: int, height: int) -> Box:
    """Validate ``box`` against a ``width × height`` image, clipping what sticks out.

    Returns:
        The box clipped to the image.

    Raises:
        ValueError: non-finite values, ``w`` or ``h`` not positive, no overlap with the
            image, or less than one pixel wide or high once clipped.
    """
    values = (box.x, box.y, box.w, box.h)
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"box {values} has a non-finite value; give x, y, w, h as numbers")
    if box.w <= 0 or box.h <= 0:
        raise ValueError(f"box {values} has width or height ≤ 0; w and h must be positive")
    x0, y0 = max(box.x, 0.0), max(box.y, 0.0)
    x1, y1 = min(box.x + box.w, float(width)), min(box.y + box.h, float(height))
    if x1 <= x0 or y1 <= y0:
        raise ValueError(
            f"box {values} lies outside the {width}×{height} image; boxes use image pixels "
            "with the origin at the top-left"
        )
    if x1 - x0 < 1 or y1 - y0 < 1:
        raise ValueError(
            f"box {values} covers less than one pixel of the {width}×{height} image once "
            "clipped; draw it at least 1 pixel wide and high"
        )
    return Box(x0, y0, x1 - x0, y1 - y0)


def pixel_span(start: float, length: float) -> tuple[int, int]:
    """First and one-past-last pixel index whose centre lies in ``[start, start + length)``."""
    first = math.ceil(start - 0.5)
    stop = math.ceil(start + length - 0.5)
    return first, stop
