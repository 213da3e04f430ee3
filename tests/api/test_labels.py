"""Labels enter NFC-normalised and stripped through every route; control characters are 422."""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.palette import PALETTE


def _png(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (20, 30, 3), np.uint8)).save(
        buffer, format="PNG"
    )
    return buffer.getvalue()


def _upload(client: TestClient, seed: int, **data: str) -> Any:
    return client.post("/api/images", files={"file": (f"{seed}.png", _png(seed))}, data=data)


BAD = [
    "a\x00b",
    "bell\x07",
    "two\nlines",
    "zero\u200bwidth",
    "rtl\u202eoverride",
    "bom\ufeff",
    "soft\u00adhyphen",
    "del\x7f",
]


@pytest.mark.parametrize("label", BAD)
def test_control_characters_are_422_everywhere(client: TestClient, label: str) -> None:
    image = _upload(client, 1).json()
    box = {"x": 1, "y": 1, "w": 5, "h": 5}
    added = client.post(f"/api/images/{image['id']}/boxes", json={**box, "label": label})
    assert added.status_code == 422 and "U+" in added.json()["detail"]
    ok = client.post(f"/api/images/{image['id']}/boxes", json={**box, "label": "ok"}).json()
    patched = client.patch(f"/api/boxes/{ok['id']}", json={"label": label})
    assert patched.status_code == 422 and "U+" in patched.json()["detail"]
    uploaded = _upload(client, 2, label=label)
    assert uploaded.status_code == 422 and "image label" in uploaded.json()["detail"]
    coco = {
        "images": [{"id": 1, "file_name": "1.png"}],
        "categories": [{"id": 1, "name": label}],
        "annotations": [{"image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5]}],
    }
    imported = client.post(
        "/api/import/coco", files={"file": ("c.json", json.dumps(coco).encode())}
    )
    assert imported.status_code == 422 and "U+" in imported.json()["detail"]
    assert [b["label"] for b in client.get("/api/boxes").json()["items"]] == ["ok"]
    assert [i["label"] for i in client.get("/api/images").json()["items"]] == [None]


def test_labels_are_nfc_and_stripped_and_one_group(client: TestClient) -> None:
    image = _upload(client, 3, label=" cafe\u0301 ").json()
    assert image["label"] == "caf\u00e9"
    box = {"x": 1, "y": 1, "w": 5, "h": 5}
    client.post(f"/api/images/{image['id']}/boxes", json={**box, "label": "cafe\u0301"})
    client.post(f"/api/images/{image['id']}/boxes", json={**box, "label": " caf\u00e9\u3000"})
    coco = {
        "images": [{"id": 1, "file_name": "3.png"}],
        "categories": [{"id": 1, "name": "\u212b"}],
        "annotations": [{"image_id": 1, "category_id": 1, "bbox": [2, 2, 5, 5]}],
    }
    client.post("/api/import/coco", files={"file": ("c.json", json.dumps(coco).encode())})
    assert client.get("/api/labels").json() == [
        {"label": "caf\u00e9", "boxes": 2, "images": 1, "colour": PALETTE[0]},
        {"label": "\u00c5", "boxes": 1, "images": 1, "colour": PALETTE[1]},
    ]
    found = client.get("/api/boxes", params={"label": "cafe\u0301"}).json()["items"]
    assert len(found) == 2
    assert len(client.get("/api/images", params={"label": "caf\u00e9"}).json()["items"]) == 1
    too_long = client.post(f"/api/images/{image['id']}/boxes", json={**box, "label": "x" * 201})
    assert too_long.status_code == 422


def test_a_lone_surrogate_in_json_is_422_not_500(client: TestClient) -> None:
    image = _upload(client, 4).json()
    raw = b'{"x": 1, "y": 1, "w": 5, "h": 5, "label": "a\\udc00b"}'
    added = client.post(
        f"/api/images/{image['id']}/boxes",
        content=raw,
        headers={"content-type": "application/json"},
    )
    assert added.status_code == 422  # refused by the body's validation already
    assert client.get("/api/boxes").json()["items"] == []
    coco = b'{"images": [], "annotations": [], "categories": [{"id": 1, "name": "\\ud800"}]}'
    imported = client.post("/api/import/coco", files={"file": ("c.json", coco)})
    assert imported.status_code == 422 and "U+D800" in imported.json()["detail"]
