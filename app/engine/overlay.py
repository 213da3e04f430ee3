"""Draw a heat map over its image, with boxes and their scores (PIL only).

Boxes take the colours the caller gives, normally their labels' colours from
:func:`app.palette.label_colours`, so a box has the same colour in a PNG as on the page.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageFont

from app.boxes import Box
from app.palette import UNKNOWN

__all__ = ["colorize", "render_overlay"]

# Viridis sampled at 9 evenly spaced points (matplotlib's table); linear in between.
_VIRIDIS = np.array(
    [
        [68, 1, 84],
        [71, 44, 122],
        [59, 81, 139],
        [44, 113, 142],
        [33, 144, 141],
        [39, 173, 129],
        [92, 200, 99],
        [170, 220, 50],
        [253, 231, 37],
    ],
    dtype=np.float64,
)


def _rgb(colour: str) -> tuple[int, int, int]:
    """``"#rrggbb"`` → ``(r, g, b)``.

    Raises:
        ValueError: not a ``#rrggbb`` colour.
    """
    if len(colour) != 7 or colour[0] != "#":
        raise ValueError(f"box colour {colour!r} must be #rrggbb")
    try:
        return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)
    except ValueError as exc:
        raise ValueError(f"box colour {colour!r} must be #rrggbb") from exc


def _ink(background: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black or white, whichever reads better on ``background`` (WCAG relative luminance)."""

    def linear(channel: int) -> float:
        c = channel / 255
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (linear(c) for c in background)
    luminance = 0.2126 * r + 0.7152 * g + 0.0722 * b
    # Contrast with black (L + 0.05) / 0.05 beats white's 1.05 / (L + 0.05) above L ≈ 0.179.
    return (0, 0, 0) if luminance > 0.179 else (255, 255, 255)


def colorize(
    values: torch.Tensor | NDArray[np.floating], low: float | None = None, high: float | None = None
) -> NDArray[np.uint8]:
    """Map an ``H×W`` array to ``H×W×3`` viridis colours, ``low`` → dark, ``high`` → yellow.

    ``low``/``high`` default to the map's minimum and maximum; a constant map is dark.
    """
    array = (
        values.detach().cpu().double().numpy()
        if isinstance(values, torch.Tensor)
        else np.asarray(values, dtype=np.float64)
    )
    if array.ndim != 2:
        raise ValueError(f"expected an H×W map, got shape {array.shape}")
    lo = float(np.nanmin(array)) if low is None else low
    hi = float(np.nanmax(array)) if high is None else high
    scaled = np.zeros_like(array) if hi <= lo else np.clip((array - lo) / (hi - lo), 0, 1)
    scaled = np.nan_to_num(scaled, nan=0.0)
    stops = np.linspace(0.0, 1.0, len(_VIRIDIS))
    rgb = np.stack([np.interp(scaled, stops, _VIRIDIS[:, c]) for c in range(3)], axis=-1)
    return np.round(rgb).astype(np.uint8)


def render_overlay(
    image: Image.Image,
    heat: torch.Tensor | NDArray[np.floating],
    boxes: Sequence[Box] = (),
    captions: Sequence[str] = (),
    alpha: float = 0.5,
    colours: Sequence[str] = (),
) -> Image.Image:
    """Blend the colourised heat map over ``image`` and draw each box with its caption.

    Args:
        image: the RGB image as displayed.
        heat: its ``H×W`` heat map (same size as the image).
        boxes: boxes in image pixels.
        captions: one text per box (label and scores), drawn above it on a tag of the
            box's colour.
        alpha: weight of the heat map in the blend, in ``[0, 1]``.
        colours: one ``"#rrggbb"`` per box, its label's colour
            (:func:`app.palette.label_colours`); a box past the end is grey
            (:data:`app.palette.UNKNOWN`, as the page draws a label it does not know).

    Raises:
        ValueError: the map's size differs from the image's, ``alpha`` is out of range, or
            a colour is not ``#rrggbb``.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    box_colours = [_rgb(c) for c in colours] + [_rgb(UNKNOWN)] * (len(boxes) - len(colours))
    shades = colorize(heat)
    if shades.shape[:2] != (image.height, image.width):
        raise ValueError(
            f"heat map is {shades.shape[1]}×{shades.shape[0]}, the image "
            f"{image.width}×{image.height}; compute the map at image size"
        )
    base = np.asarray(image.convert("RGB"), dtype=np.float64)
    blended = np.round(base * (1 - alpha) + shades * alpha).astype(np.uint8)
    out = Image.fromarray(blended)
    draw = ImageDraw.Draw(out)
    font = ImageFont.load_default()
    width = max(1, round(min(image.width, image.height) / 150))
    for i, box in enumerate(boxes):
        colour = box_colours[i]
        shape = [box.x, box.y, box.x + box.w - 1, box.y + box.h - 1]
        draw.rectangle(shape, outline=colour, width=width)
        if i < len(captions) and captions[i]:
            left, top, right, bottom = draw.textbbox((0, 0), captions[i], font=font)
            ty = box.y - (bottom - top) - 4 if box.y >= (bottom - top) + 4 else box.y + width
            tx = max(0.0, min(box.x + width, image.width - (right - left) - 4))
            draw.rectangle([tx, ty, tx + right - left + 4, ty + bottom - top + 4], fill=colour)
            draw.text((tx + 2 - left, ty + 2 - top), captions[i], fill=_ink(colour), font=font)
    return out
