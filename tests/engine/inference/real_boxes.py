"""``gap`` descriptors of random boxes on a real photo, for nulls built from real boxes."""

from __future__ import annotations

from typing import Any

import torch

from app.boxes import Box
from app.engine.features import extract
from app.engine.regions import region_descriptors
from app.images import decode_image


def box_rows(
    model: Any, png: bytes, count: int, g: torch.Generator, layer: str = "conv_head"
) -> torch.Tensor:
    """``count×C`` rows: ``gap`` at ``layer`` of random boxes (sides 40–160 px) of one
    photo, placed with draws from ``g``."""
    image = decode_image(png, max_pixels=10**8)
    fmap = extract(model, [image], [layer])[0][layer]
    sizes = 40 + torch.rand(count, 2, generator=g) * 120
    room = torch.tensor([image.width, image.height]) - sizes
    corners = torch.rand(count, 2, generator=g) * room
    boxes = [
        Box(float(x), float(y), float(w), float(h))
        for (x, y), (w, h) in zip(corners, sizes, strict=True)
    ]
    return torch.stack(region_descriptors(fmap, (image.width, image.height), boxes, "gap"))
