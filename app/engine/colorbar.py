"""A title above an overlay and a titled colour bar beside it, so a PNG reads on its own."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from app.engine.overlay import colorize

__all__ = ["Framed", "frame_overlay"]

_Font = ImageFont.FreeTypeFont | ImageFont.ImageFont


@dataclass(frozen=True)
class Framed:
    """The framed picture and where the overlay sits in it (pixels, top-left origin)."""

    image: Image.Image
    left: int
    top: int


def _bbox(draw: ImageDraw.ImageDraw, text: str, font: _Font) -> list[int]:
    """The text's bounding box in whole pixels (FreeType answers in fractions)."""
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    return [math.floor(left), math.floor(top), math.ceil(right), math.ceil(bottom)]


def _tick(value: float) -> str:
    return f"{value:.3g}"


def frame_overlay(
    overlay: Image.Image, low: float, high: float, title: str, bar_title: str
) -> Framed:
    """Put ``title`` above ``overlay`` and a viridis colour bar from ``low`` to ``high`` right.

    The bar uses :func:`app.engine.overlay.colorize`'s colours, so its bottom is the colour of
    ``low`` in the overlay and its top that of ``high``; it carries three ticks (low, middle,
    high) and ``bar_title`` written along it.

    Args:
        overlay: the heat map blended over its image.
        low: the map value drawn darkest.
        high: the map value drawn brightest (``high == low``: a constant map, one colour).
        title: one line above the picture (model, layer, method, target).
        bar_title: what the colours show (method and scaling), along the bar.

    Returns:
        The framed RGB image and the overlay's offset in it.
    """
    size = max(12, round(min(overlay.width, overlay.height) / 24))
    font = ImageFont.load_default(size=size)
    small = ImageFont.load_default(size=max(10, round(size * 0.85)))
    pad = max(4, size // 2)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    title_box = _bbox(probe, title, font)
    top = title_box[3] - title_box[1] + 2 * pad
    ticks = [high, (low + high) / 2, low] if high > low else [high]
    tick_width = max(_bbox(probe, _tick(v), small)[2] for v in ticks)
    bar_height = max(2, overlay.height - 2 * pad)
    bar_width = max(10, size)
    label_box = _bbox(probe, bar_title, small)
    label_height = label_box[3] - label_box[1]
    right = pad + bar_width + pad + tick_width + pad + label_height + pad
    width = max(overlay.width + right, title_box[2] - title_box[0] + 2 * pad)
    canvas = Image.new("RGB", (width, overlay.height + top), (255, 255, 255))
    canvas.paste(overlay.convert("RGB"), (0, top))
    draw = ImageDraw.Draw(canvas)
    draw.text((pad - title_box[0], pad - title_box[1]), title, fill=(0, 0, 0), font=font)
    # The gradient runs from high (top) to low (bottom), like Plotly's colour bars.
    ramp = np.linspace(1.0, 0.0, max(2, bar_height))[:, None].repeat(bar_width, axis=1)
    bar = Image.fromarray(colorize(ramp, 0.0, 1.0))
    bar_left, bar_top = overlay.width + pad, top + pad
    canvas.paste(bar, (bar_left, bar_top))
    draw.rectangle(
        [bar_left - 1, bar_top - 1, bar_left + bar_width, bar_top + bar_height], outline=(0, 0, 0)
    )
    for i, value in enumerate(ticks):
        y = bar_top + (0 if len(ticks) == 1 else round(i * (bar_height - 1) / (len(ticks) - 1)))
        text = _tick(value)
        box = _bbox(draw, text, small)
        tx = bar_left + bar_width + pad
        ty = min(max(y - (box[3] - box[1]) // 2, top), canvas.height - (box[3] - box[1]) - 1)
        draw.line([bar_left + bar_width, y, bar_left + bar_width + pad // 2, y], fill=(0, 0, 0))
        draw.text((tx - box[0], ty - box[1]), text, fill=(0, 0, 0), font=small)
    # The bar's title, written bottom to top along its right side.
    label = Image.new("RGB", (label_box[2] - label_box[0] + 2, label_height + 2), (255, 255, 255))
    ImageDraw.Draw(label).text((1 - label_box[0], 1 - label_box[1]), bar_title, (0, 0, 0), small)
    label = label.rotate(90, expand=True)
    lx = bar_left + bar_width + pad + tick_width + pad
    ly = bar_top + max(0, (bar_height - label.height) // 2)
    if label.height > bar_height:  # a long title on a short image: crop rather than overflow
        cut = (label.height - bar_height) // 2
        label = label.crop((0, cut, label.width, cut + bar_height))
    canvas.paste(label, (lx, ly))
    return Framed(canvas, 0, top)
