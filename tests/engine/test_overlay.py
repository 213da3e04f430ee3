"""Overlay rendering: colour scale, blend and boxes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from app.boxes import Box
from app.engine.overlay import colorize, render_overlay


def test_colorize_scale() -> None:
    values = torch.tensor([[0.0, 0.5, 1.0]], dtype=torch.float64)
    out = colorize(values)
    assert out[0, 0].tolist() == [68, 1, 84] and out[0, 2].tolist() == [253, 231, 37]
    assert out[0, 1].tolist() == [33, 144, 141]
    assert (colorize(np.full((2, 3), 7.0)) == [68, 1, 84]).all()
    with pytest.raises(ValueError, match="H×W"):
        colorize(np.zeros(3))


def test_render_overlay_blends_and_draws_boxes() -> None:
    image = Image.new("RGB", (9, 6), (100, 100, 100))
    heat = np.zeros((6, 9))
    heat[0, 0] = 1.0
    out = np.asarray(render_overlay(image, heat, [Box(4, 2, 4, 3)], [""], alpha=0.5))
    assert out[0, 0].tolist() == [176, 166, 68]  # (100 + 253) / 2 …, rounded
    assert out[5, 8].tolist() == [84, 50, 92]
    assert out[2, 4].tolist() == [255, 64, 64] and out[3, 5].tolist() == [84, 50, 92]
    with pytest.raises(ValueError, match="image size"):
        render_overlay(image, np.zeros((5, 9)))
    with pytest.raises(ValueError, match="alpha"):
        render_overlay(image, heat, alpha=2.0)
