"""The store as the browser tests set it up: an image or a box through the REST API."""

from __future__ import annotations

from typing import Any

import httpx

__all__ = ["post_box", "post_image"]


def post_image(origin: str, name: str, png: bytes) -> dict[str, Any]:
    """Upload ``png`` as ``name.png``; the image record (new or the same bytes' one)."""
    response = httpx.post(f"{origin}/api/images", files={"file": (f"{name}.png", png, "image/png")})
    assert response.status_code in (200, 201), response.text
    image: dict[str, Any] = response.json()
    return image


def post_box(origin: str, image_id: int, x: int, y: int, w: int, h: int, label: str) -> int:
    """Add a box to an image; its id."""
    response = httpx.post(
        f"{origin}/api/images/{image_id}/boxes",
        json={"x": x, "y": y, "w": w, "h": h, "label": label},
    )
    assert response.status_code == 201, response.text
    box_id: int = response.json()["id"]
    return box_id
