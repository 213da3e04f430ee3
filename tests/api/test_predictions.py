"""POST /api/predictions on the real embedded model: images and box crops."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

pytestmark = pytest.mark.slow


def _image(client: TestClient, photo: Any, name: str) -> dict[str, Any]:
    response = client.post(
        "/api/images", files={"file": (f"{name}.png", photo.png(name), "image/png")}
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def test_image_and_box_predictions(client: TestClient, photo: Any) -> None:
    chelsea, coffee = _image(client, photo, "chelsea"), _image(client, photo, "coffee")
    whole = client.post("/api/predictions", json={"image_id": chelsea["id"], "k": 3})
    assert whole.status_code == 200, whole.text
    top = whole.json()["predictions"]
    assert len(top) == 3 and {281, 285} & {p["index"] for p in top}
    assert top[0]["probability"] >= top[1]["probability"] >= top[2]["probability"]
    espresso = client.post("/api/predictions", json={"image_id": coffee["id"]}).json()
    assert espresso["predictions"][0]["index"] == 967 and len(espresso["predictions"]) == 5

    # A crop of the cup alone is still espresso; the crop's numbers differ from the image's.
    box = client.post(
        f"/api/images/{coffee['id']}/boxes",
        json={"x": 40, "y": 20, "w": 500, "h": 330, "label": "cup"},
    ).json()
    crop = client.post("/api/predictions", json={"image_id": coffee["id"], "box_id": box["id"]})
    assert crop.status_code == 200, crop.text
    assert crop.json()["box_id"] == box["id"]
    assert crop.json()["predictions"][0]["index"] == 967
    assert crop.json()["predictions"][0]["probability"] != espresso["predictions"][0]["probability"]

    wrong = client.post("/api/predictions", json={"image_id": chelsea["id"], "box_id": box["id"]})
    assert wrong.status_code == 422 and "belongs to image" in wrong.json()["detail"]
    for body, status in (
        ({"image_id": 999}, 404),
        ({"image_id": chelsea["id"], "box_id": 999}, 404),
        ({"image_id": chelsea["id"], "model": "nope"}, 404),
        ({"image_id": chelsea["id"], "k": 0}, 422),
    ):
        assert client.post("/api/predictions", json=body).status_code == status, body
