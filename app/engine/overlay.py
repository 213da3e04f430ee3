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
    for box, colour in zip(boxes, box_colours, strict=False):
        shape = [box.x, box.y, box.x + box.w - 1, box.y + box.h - 1]
        draw.rectangle(shape, outline=colour, width=width)
    # Tags after every outline, each where no earlier tag is: nearby boxes keep their captions.
    placed: list[_Rect] = []
    for i, box in enumerate(boxes[: len(captions)]):
        if not captions[i]:
            continue
        left, top, right, bottom = draw.textbbox((0, 0), captions[i], font=font)
        size = (right - left + 4, bottom - top + 4)
        tx, ty = _place(box, size, (image.width, image.height), width, placed)
        placed.append((tx, ty, tx + size[0], ty + size[1]))
        colour = box_colours[i]
        draw.rectangle([tx, ty, tx + size[0] - 1, ty + size[1] - 1], fill=colour)
        draw.text((tx + 2 - left, ty + 2 - top), captions[i], fill=_ink(colour), font=font)
    return out


_Rect = tuple[float, float, float, float]  # left, top, right, bottom (exclusive)


_REACH = 16  # rows tried each way beyond the four by the box, and earlier tags to sit beside


def _place(
    box: Box,
    size: tuple[float, float],
    image: tuple[int, int],
    width: int,
    placed: Sequence[_Rect],
) -> tuple[float, float]:
    """Top-left corner of a caption's tag near ``box``, clear of the tags in ``placed``.

    Candidates, in whole pixels inside the picture: rows just above the box, inside its top
    edge, just below it, inside its bottom edge, then up to ``_REACH`` further above and
    below, one tag height apart; columns at the box's left edge, ending at its right edge,
    and beside each of the ``_REACH`` earlier tags nearest the box. Of the candidates that
    hide no earlier tag, the one nearest the box (the gap between them; the order above
    breaks ties); when every one hides some, the one that hides the least.
    """
    tw, th = size
    iw, ih = image
    rows = [box.y - th, box.y + width, box.y + box.h, box.y + box.h - width - th]
    for k in range(1, min(len(placed), _REACH) + 2):
        rows += [box.y - th * (k + 1), box.y + box.h + th * k]
    tags = np.array(placed, dtype=np.float64).reshape(-1, 4)

    def gap(left: NDArray[np.float64], top: NDArray[np.float64]) -> NDArray[np.float64]:
        """Distance from tags at ``left, top`` (of the size being placed) to the box."""
        across = np.maximum(0, np.maximum(box.x - (left + tw), left - (box.x + box.w)))
        down = np.maximum(0, np.maximum(box.y - (top + th), top - (box.y + box.h)))
        return np.asarray(np.hypot(across, down), dtype=np.float64)

    near = tags[np.argsort(gap(tags[:, 0], tags[:, 1]), kind="stable")[:_REACH]]
    columns = [box.x + width, box.x + box.w - width - tw, *near[:, 2], *(near[:, 0] - tw)]
    # Whole pixels, so that tags which do not touch stay apart once drawn.
    ys = np.array([round(y) for y in rows if 0 <= round(y) <= ih - th] or [0], dtype=np.float64)
    xs = np.clip(np.round(columns), 0, max(0, iw - tw))
    left = np.tile(xs, len(ys))[:, None]
    top = np.repeat(ys, len(xs))[:, None]
    wide = np.clip(np.minimum(left + tw, tags[:, 2]) - np.maximum(left, tags[:, 0]), 0, None)
    tall = np.clip(np.minimum(top + th, tags[:, 3]) - np.maximum(top, tags[:, 1]), 0, None)
    hidden = (wide * tall).sum(axis=1)
    # What a spot hides first, then its distance; np.lexsort is stable (the order above).
    best = np.lexsort((gap(left[:, 0], top[:, 0]), hidden))[0]
    return float(left[best, 0]), float(top[best, 0])
