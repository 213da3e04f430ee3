"""A titled colour bar beside an overlay, in the overlay's own colours."""

from __future__ import annotations

import numpy as np
from PIL import Image

from app.engine.colorbar import frame_overlay
from app.engine.overlay import colorize


def _overlay(width: int, height: int) -> Image.Image:
    rng = np.random.default_rng(3)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def test_the_overlay_is_kept_pixel_for_pixel_under_the_title() -> None:
    overlay = _overlay(333, 217)
    framed = frame_overlay(overlay, -0.25, 1.75, "model · layer · gradcam · target", "gradcam")
    pixels = np.asarray(framed.image)
    assert framed.left == 0 and framed.top > 0
    assert framed.image.height == 217 + framed.top and framed.image.width > 333
    inner = pixels[framed.top :, :333]
    assert np.array_equal(inner, np.asarray(overlay))
    # The title strip is mostly white with dark text in it.
    strip = pixels[: framed.top]
    assert (strip == 255).all(axis=-1).mean() > 0.5 and (strip < 100).all(axis=-1).any()


def test_the_bar_runs_from_the_colour_of_high_at_the_top_to_that_of_low() -> None:
    overlay = Image.new("RGB", (300, 200), (255, 255, 255))
    framed = frame_overlay(overlay, 0.0, 5.0, "t", "raw values")
    pixels = np.asarray(framed.image).astype(int)[framed.top :, 300:]
    top, bottom = colorize(np.array([[1.0, 0.0]]))[0].astype(int)
    # The column of the bar: where the top colour appears.
    hits = np.argwhere(np.abs(pixels - top).sum(axis=-1) <= 3)
    assert len(hits)
    column = pixels[:, hits[0][1]]
    rows_top = np.flatnonzero(np.abs(column - top).sum(axis=-1) <= 3)
    rows_bottom = np.flatnonzero(np.abs(column - bottom).sum(axis=-1) <= 3)
    assert rows_top.max() < rows_bottom.min()  # high above low
    # In between, the bar passes through viridis' middle.
    middle = colorize(np.array([[0.5]]), 0.0, 1.0)[0, 0].astype(int)
    assert (np.abs(column - middle).sum(axis=-1) <= 6).any()


def test_a_constant_map_gets_one_tick_and_small_images_still_frame() -> None:
    framed = frame_overlay(_overlay(40, 30), 2.0, 2.0, "a long title for a tiny image", "x" * 80)
    assert framed.image.width >= 40 and framed.image.height > 30
    assert np.array_equal(np.asarray(framed.image)[framed.top :, :40], np.asarray(_overlay(40, 30)))
