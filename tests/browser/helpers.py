"""What the browser tests share: polling the page under its CSP, opening the dashboard, and
setting up the store (an image or a box) through the REST API."""

from __future__ import annotations

import time
from typing import Any

import httpx

__all__ = ["open_dashboard", "open_image", "post_box", "post_image", "wait_for"]

Page = Any


def wait_for(page: Page, expression: str, timeout: float = 30.0) -> None:
    """Poll a JS expression until it is truthy.

    Playwright's ``wait_for_function`` evaluates its string inside the page with ``eval``,
    which the app's Content-Security-Policy (no 'unsafe-eval') rightly refuses;
    ``page.evaluate`` runs through the DevTools protocol, outside the page's policy.
    """
    deadline = time.monotonic() + timeout
    while not page.evaluate(f"Boolean({expression})"):
        if time.monotonic() > deadline:
            raise TimeoutError(f"still false after {timeout} s: {expression}")
        time.sleep(0.05)


def open_dashboard(page: Page, origin: str) -> None:
    """Load the page and wait until its script marks it ready."""
    page.goto(origin + "/")
    page.wait_for_selector("body[data-ready='1']")


def open_image(page: Page, filename: str) -> dict[str, float]:
    """Open the image from its gallery card; its overlay's box on screen once laid out.

    The editor marks ``#editor-stage[data-shown=<id>]`` after the picture is decoded and
    placed; the image element's ``complete`` is already true before (no src yet), and the
    overlay's viewBox is set before the layout.
    """
    card = page.locator(".card", has=page.locator(f"img[alt='{filename}']"))
    image_id = card.get_attribute("data-image-id")
    card.locator("img").click()
    page.wait_for_selector(f"#editor-stage[data-shown='{image_id}']")
    box: dict[str, float] = page.locator(".editor-overlay").bounding_box()
    return box


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
