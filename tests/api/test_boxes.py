"""Boxes API: add, list and filter, read, patch, delete, labels, limits, concurrency."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.palette import PALETTE


def _box(client: TestClient, image_id: int, **fields: Any) -> Any:
    body = {"x": 10, "y": 20, "w": 30, "h": 40, "label": "cat", **fields}
    return client.post(f"/api/images/{image_id}/boxes", json=body)


def test_add_list_filter_get_patch_delete(
    client: TestClient, upload: Callable[..., dict[str, Any]]
) -> None:
    chelsea, coffee = upload("chelsea"), upload("coffee")
    cat = _box(client, chelsea["id"], x=140.5, y=20.25, w=160, h=150)
    assert cat.status_code == 201
    cat_box = cat.json()
    assert {k: cat_box[k] for k in ("image_id", "x", "y", "w", "h", "label")} == {
        "image_id": chelsea["id"],
        "x": 140.5,
        "y": 20.25,
        "w": 160,
        "h": 150,
        "label": "cat",
    }
    cup = _box(client, coffee["id"], label="cup").json()
    _box(client, coffee["id"], label="cat", x=0, y=0)
    listed = client.get("/api/boxes").json()
    assert [b["id"] for b in listed["items"]] == [cat_box["id"], cup["id"], cup["id"] + 1]
    assert (listed["total"], listed["next_cursor"]) == (3, None)
    cups = client.get("/api/boxes", params={"label": "cup"}).json()["items"]
    assert [b["label"] for b in cups] == ["cup"]
    both = client.get("/api/boxes", params=[("label", "cup"), ("label", "cat")]).json()["items"]
    assert len(both) == 3
    on_coffee = client.get("/api/boxes", params={"image_id": coffee["id"]}).json()["items"]
    assert [b["id"] for b in on_coffee] == [cup["id"], cup["id"] + 1]
    assert client.get(f"/api/images/{coffee['id']}/boxes").json() == on_coffee
    assert client.get(f"/api/boxes/{cup['id']}").json() == cup
    assert client.get(f"/api/images/{coffee['id']}").json()["box_count"] == 2
    assert client.get("/api/labels").json() == [
        {"label": "cat", "boxes": 2, "images": 2, "colour": PALETTE[0]},
        {"label": "cup", "boxes": 1, "images": 1, "colour": PALETTE[1]},
    ]
    patched = client.patch(f"/api/boxes/{cup['id']}", json={"label": "mug", "w": 50})
    assert patched.status_code == 200
    assert (patched.json()["label"], patched.json()["w"], patched.json()["x"]) == ("mug", 50, 10)
    assert client.delete(f"/api/boxes/{cup['id']}").status_code == 204
    assert client.get(f"/api/boxes/{cup['id']}").status_code == 404
    assert client.delete(f"/api/boxes/{cup['id']}").status_code == 404
    assert client.patch(f"/api/boxes/{cup['id']}", json={"label": "x"}).status_code == 404


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"w": 0}, "positive"),
        ({"h": -3}, "positive"),
        ({"x": 451}, "451×300"),
        ({"y": -100, "h": 50}, "451×300"),
    ],
)
def test_bad_boxes_are_422_saying_why(
    client: TestClient, upload: Callable[..., dict[str, Any]], fields: dict[str, Any], message: str
) -> None:
    image = upload("chelsea")
    response = _box(client, image["id"], **fields)
    assert response.status_code == 422
    assert message in response.json()["detail"]
    box = _box(client, image["id"]).json()
    moved = client.patch(f"/api/boxes/{box['id']}", json=fields)
    assert moved.status_code == 422 and message in moved.json()["detail"]


@pytest.mark.parametrize(
    "body",
    [
        {"x": 1, "y": 1, "w": 2, "h": 2},
        {"x": 1, "y": 1, "w": 2, "h": 2, "label": ""},
        {"x": 1, "y": 1, "w": 2, "h": 2, "label": "   "},
        {"x": "a", "y": 1, "w": 2, "h": 2, "label": "c"},
    ],
)
def test_malformed_box_bodies_are_422(
    client: TestClient, upload: Callable[..., dict[str, Any]], body: dict[str, Any]
) -> None:
    image = upload("chelsea")
    assert client.post(f"/api/images/{image['id']}/boxes", json=body).status_code == 422


def test_box_on_unknown_image_is_404(client: TestClient) -> None:
    response = _box(client, 77)
    assert response.status_code == 404 and "no image with id 77" in response.json()["detail"]


def test_boxes_per_image_limit(data_dir: Path, monkeypatch: pytest.MonkeyPatch, photo: Any) -> None:
    from app.config import get_settings
    from app.main import create_app

    monkeypatch.setenv("FEATUREGAP_MAX_BOXES_PER_IMAGE", "2")
    get_settings.cache_clear()
    with TestClient(create_app(get_settings())) as client:
        image = client.post("/api/images", files={"file": ("c.png", photo.png("chelsea"))}).json()
        assert _box(client, image["id"]).status_code == 201
        assert _box(client, image["id"]).status_code == 201
        third = _box(client, image["id"])
        assert third.status_code == 422 and "limit of 2 boxes" in third.json()["detail"]


def test_restart_finds_everything(data_dir: Path, photo: Any) -> None:
    from app.config import get_settings
    from app.main import create_app

    with TestClient(create_app(get_settings())) as client:
        image = client.post(
            "/api/images", files={"file": ("c.png", photo.png("chelsea"))}, data={"label": "source"}
        ).json()
        box = _box(client, image["id"]).json()
    with TestClient(create_app(get_settings())) as client:
        assert client.get("/api/images").json()["items"] == [
            {**image, "box_count": 1, "box_labels": ["cat"]}
        ]
        assert client.get("/api/boxes").json()["items"] == [box]
        assert client.get(f"/api/images/{image['id']}/file").content == photo.png("chelsea")


def test_threads_hammering_uploads_and_boxes_lose_nothing(client: TestClient) -> None:
    import io

    import numpy as np
    from PIL import Image

    def png(seed: int) -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(np.random.default_rng(seed).integers(0, 256, (24, 32, 3), np.uint8)).save(
            buffer, format="PNG"
        )
        return buffer.getvalue()

    statuses: list[int] = []
    lock = threading.Lock()

    def worker(w: int) -> None:
        for i in range(6):
            up = client.post("/api/images", files={"file": (f"{w}-{i}.png", png(w * 100 + i))})
            shared = client.post("/api/images", files={"file": ("s.png", png(424242))})
            box = _box(client, up.json()["id"], x=1, y=1, w=5, h=5, label=f"w{w}")
            box2 = _box(client, shared.json()["id"], x=0, y=0, w=3, h=3, label="shared")
            with lock:
                statuses.extend(
                    [up.status_code, shared.status_code, box.status_code, box2.status_code]
                )

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert set(statuses) <= {200, 201} and len(statuses) == 6 * 6 * 4
    assert len(client.get("/api/images").json()["items"]) == 6 * 6 + 1
    labels = {x["label"]: x["boxes"] for x in client.get("/api/labels").json()}
    assert labels == {**{f"w{w}": 6 for w in range(6)}, "shared": 36}
