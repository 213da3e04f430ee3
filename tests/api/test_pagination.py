"""Paginated listings: a cursor walk equals the full list, filters, totals, bad cursors."""

from __future__ import annotations

import base64
import io
from collections import Counter
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.palette import PALETTE

LABELS = ("cat", "cup", "dog")


def _png(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (7, 11, 3), np.uint8)).save(
        buffer, format="PNG"
    )
    return buffer.getvalue()


@pytest.fixture
def dataset(client: TestClient) -> dict[str, Any]:
    """23 images (every 4th with image label "night"), 0–4 boxes each with mixed labels; one
    image and one box deleted, so ids have holes. Returns what the server should list."""
    rng = np.random.default_rng(7)
    images: list[dict[str, Any]] = []
    boxes: list[dict[str, Any]] = []
    for seed in range(23):
        data = {"label": "night"} if seed % 4 == 0 else {}
        image = client.post(
            "/api/images", files={"file": (f"{seed}.png", _png(seed))}, data=data
        ).json()
        images.append(image)
        for _ in range(int(rng.integers(0, 5))):
            label = LABELS[int(rng.integers(0, len(LABELS)))]
            boxes.append(
                client.post(
                    f"/api/images/{image['id']}/boxes",
                    json={"x": 1, "y": 1, "w": 3, "h": 2, "label": label},
                ).json()
            )
    gone_image = images.pop(5)
    assert client.delete(f"/api/images/{gone_image['id']}").status_code == 204
    boxes = [b for b in boxes if b["image_id"] != gone_image["id"]]
    gone_box = boxes.pop(3)
    assert client.delete(f"/api/boxes/{gone_box['id']}").status_code == 204
    counts = Counter(b["image_id"] for b in boxes)
    images = [
        {
            **i,
            "box_count": counts[i["id"]],
            "box_labels": sorted({b["label"] for b in boxes if b["image_id"] == i["id"]}),
        }
        for i in images
    ]
    return {"images": images, "boxes": boxes}


def _walk(client: TestClient, path: str, **params: Any) -> tuple[list[Any], list[int]]:
    """Every item of a listing, page by page; also the totals each page reported."""
    items: list[Any] = []
    totals: list[int] = []
    cursor = None
    for _ in range(1000):
        page = client.get(path, params={**params, **({"cursor": cursor} if cursor else {})})
        assert page.status_code == 200, page.text
        body = page.json()
        assert set(body) == {"items", "next_cursor", "total"}
        assert len(body["items"]) <= params.get("limit", 100)
        items += body["items"]
        totals.append(body["total"])
        cursor = body["next_cursor"]
        if cursor is None:
            return items, totals
        assert len(body["items"]) == params.get("limit", 100)  # only the last page is short
    raise AssertionError("the cursor never ended")


@pytest.mark.parametrize("limit", [1, 4, 7, 1000])
def test_a_cursor_walk_equals_the_full_list(
    client: TestClient, dataset: dict[str, Any], limit: int
) -> None:
    boxes, box_totals = _walk(client, "/api/boxes", limit=limit)
    assert boxes == dataset["boxes"]
    assert set(box_totals) == {len(dataset["boxes"])}
    images, image_totals = _walk(client, "/api/images", limit=limit)
    assert images == dataset["images"]
    assert [client.get(f"/api/images/{i['id']}").json() for i in images] == images
    assert set(image_totals) == {len(dataset["images"])}


def test_filters_combine_with_the_cursor(client: TestClient, dataset: dict[str, Any]) -> None:
    cats = [b for b in dataset["boxes"] if b["label"] == "cat"]
    assert _walk(client, "/api/boxes", label="cat", limit=2)[0] == cats
    both = [b for b in dataset["boxes"] if b["label"] in {"cat", "dog"}]
    found, totals = _walk(client, "/api/boxes", label=["dog", "cat"], limit=3)
    assert found == both and set(totals) == {len(both)}
    image_id = dataset["boxes"][-1]["image_id"]
    assert _walk(client, "/api/boxes", image_id=image_id, limit=1)[0] == [
        b for b in dataset["boxes"] if b["image_id"] == image_id
    ]
    night = [i for i in dataset["images"] if i["label"] == "night"]
    assert _walk(client, "/api/images", label="night", limit=2)[0] == night
    with_cups = {b["image_id"] for b in dataset["boxes"] if b["label"] == "cup"}
    cup_images, totals = _walk(client, "/api/images", box_label="cup", limit=3)
    assert cup_images == [i for i in dataset["images"] if i["id"] in with_cups]
    assert set(totals) == {len(with_cups)}
    empty = client.get("/api/boxes", params={"label": "zebra"}).json()
    assert empty == {"items": [], "next_cursor": None, "total": 0}


def test_the_default_page_is_100_and_limit_stops_at_1000(client: TestClient) -> None:
    image = client.post("/api/images", files={"file": ("a.png", _png(1))}).json()
    for _ in range(3):
        client.post(
            f"/api/images/{image['id']}/boxes", json={"x": 0, "y": 0, "w": 2, "h": 2, "label": "a"}
        )
    page = client.get("/api/boxes", params={"limit": 2}).json()
    assert len(page["items"]) == 2 and page["total"] == 3 and page["next_cursor"]
    assert client.get("/api/boxes", params={"limit": 1001}).status_code == 422
    assert client.get("/api/boxes", params={"limit": 0}).status_code == 422
    from app.api.pagination import DEFAULT_LIMIT

    assert DEFAULT_LIMIT == 100


def test_labels_come_with_box_and_image_counts(client: TestClient, dataset: dict[str, Any]) -> None:
    expected = [
        {
            "label": label,
            "boxes": sum(b["label"] == label for b in dataset["boxes"]),
            "images": len({b["image_id"] for b in dataset["boxes"] if b["label"] == label}),
            "colour": PALETTE[rank],
        }
        for rank, label in enumerate(sorted({b["label"] for b in dataset["boxes"]}))
    ]
    assert client.get("/api/labels").json() == expected


def _cursor(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        "nonsense",
        "%%%",
        "é",
        _cursor("images:3"),
        _cursor("boxes:"),
        _cursor("boxes:-4"),
        _cursor("boxes:0"),
        _cursor("boxes:1e3"),
        _cursor(f"boxes:{2**63}"),
        "x" * 201,
    ],
)
def test_a_bad_cursor_is_422_saying_what_to_pass(client: TestClient, cursor: str) -> None:
    response = client.get("/api/boxes", params={"cursor": cursor})
    assert response.status_code == 422
    if len(cursor) <= 200:
        assert "next_cursor" in response.json()["detail"]


def test_a_cursor_survives_deletes_between_pages(
    client: TestClient, dataset: dict[str, Any]
) -> None:
    first = client.get("/api/boxes", params={"limit": 5}).json()
    # The page's last box goes away before the next page is asked for: nothing repeats and
    # nothing after it is skipped (keyset on id, not OFFSET).
    assert client.delete(f"/api/boxes/{first['items'][-1]['id']}").status_code == 204
    assert client.delete(f"/api/boxes/{first['items'][0]['id']}").status_code == 204
    rest = _walk_from(client, first["next_cursor"])
    assert rest == dataset["boxes"][5:]


def _walk_from(client: TestClient, cursor: str) -> list[Any]:
    items: list[Any] = []
    while cursor:
        body = client.get("/api/boxes", params={"cursor": cursor, "limit": 4}).json()
        items += body["items"]
        cursor = body["next_cursor"]
    return items
