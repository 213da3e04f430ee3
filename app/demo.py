"""The demo project: scikit-image's photos with boxes on their objects and textures.

``featuregap serve --demo`` loads it into an empty store at the first start, so a newcomer
sees heat maps, distances and a t-SNE at once. The photos ship inside scikit-image's
wheel; the grayscale textures are stored as RGB PNGs. Boxes were placed by looking at the
photos (``x, y, w, h`` in image pixels).
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from app.store import Store

__all__ = ["DEMO_BOXES", "load_demo", "demo_png"]

_TEXTURE_GRID = [(x, y, 160.0, 200.0) for y in (40.0, 272.0) for x in (16.0, 176.0, 336.0)]

DEMO_BOXES: dict[str, list[tuple[float, float, float, float, str]]] = {
    "chelsea": [(50, 0, 350, 285, "cat")],
    "coffee": [(170, 15, 250, 290, "cup")],
    "astronaut": [
        (160, 35, 135, 130, "face"),
        (275, 340, 237, 172, "helmet"),
        (355, 0, 115, 280, "rocket"),
    ],
    "rocket": [(298, 122, 48, 285, "rocket")],
    "brick": [(*box, "brick") for box in _TEXTURE_GRID],
    "grass": [(*box, "grass") for box in _TEXTURE_GRID],
    "gravel": [(*box, "gravel") for box in _TEXTURE_GRID],
}
"""Boxes per scikit-image photo: ``(x, y, w, h, label)``."""


def demo_png(name: str) -> bytes:
    """One scikit-image photo as RGB PNG bytes (grayscale textures become RGB)."""
    from skimage import data

    pixels = np.asarray(getattr(data, name)())
    if pixels.ndim == 2:
        pixels = np.stack([pixels] * 3, axis=-1)
    buffer = io.BytesIO()
    Image.fromarray(pixels[..., :3].astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def load_demo(store: Store) -> int:
    """Fill an empty store with the demo photos and boxes.

    Args:
        store: the store; nothing happens when it already holds an image.

    Returns:
        The number of images added (0 when the store was not empty).
    """
    if store.count_images():
        return 0
    for name, boxes in DEMO_BOXES.items():
        image, _ = store.add_image(demo_png(name), f"{name}.png")
        store.add_boxes(image.id, boxes)
    return len(DEMO_BOXES)
