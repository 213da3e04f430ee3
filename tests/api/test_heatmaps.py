"""POST /api/heatmaps on the real embedded model and real photos; scores checked by hand."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.api.helpers import module_app

pytestmark = pytest.mark.slow

LAYER = "conv_head"


@pytest.fixture(scope="module")
def app_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """One app on its own data directory for the module (the model loads once)."""
    with module_app(tmp_path_factory, "heat") as client:
        yield client


@pytest.fixture(scope="module")
def chelsea(app_client: TestClient, photo: Any) -> dict[str, Any]:
    """Chelsea uploaded with a box on the cat's face and one in the top-left corner."""
    image = app_client.post(
        "/api/images", files={"file": ("chelsea.png", photo.png("chelsea"), "image/png")}
    ).json()
    boxes = [
        app_client.post(f"/api/images/{image['id']}/boxes", json=box).json()
        for box in (
            {"x": 140, "y": 20, "w": 180, "h": 210, "label": "cat"},
            {"x": 0, "y": 0, "w": 40.5, "h": 37, "label": "background"},
        )
    ]
    return {"image": image, "boxes": boxes}


def _post(client: TestClient, image_id: int, **extra: Any) -> Any:
    body = {"image_id": image_id, "layer": LAYER, "method": "gradcam", **extra}
    return client.post("/api/heatmaps", json=body)


def test_gradcam_scores_every_box_and_agrees_with_a_hand_computation(
    app_client: TestClient, chelsea: dict[str, Any]
) -> None:
    from app.engine.heatmaps import compute_heatmap
    from app.engine.models import get_model
    from app.images import decode_image

    image = chelsea["image"]
    response = _post(app_client, image["id"])
    assert response.status_code == 200, response.text
    body = response.json()
    top = [p["index"] for p in body["prediction"]]
    assert len(top) == 5 and {281, 285} & set(top[:3])
    assert body["target"] == top[0] and "cat" in body["target_label"].lower()
    assert [b["id"] for b in body["boxes"]] == [b["id"] for b in chelsea["boxes"]]

    # Independent check: energy and pointing game by hand from the engine's raw map.
    model = get_model("efficientnet_lite0")
    decoded = decode_image(
        app_client.get(f"/api/images/{image['id']}/file").content, max_pixels=10**8
    )
    raw = compute_heatmap(model, decoded, LAYER, "gradcam").values.double().numpy()
    positive = np.clip(raw, 0, None)
    cols, rows = np.arange(raw.shape[1]) + 0.5, np.arange(raw.shape[0]) + 0.5
    for box in body["boxes"]:
        inside = np.outer(
            (rows >= box["y"]) & (rows < box["y"] + box["h"]),
            (cols >= box["x"]) & (cols < box["x"] + box["w"]),
        )
        assert box["scores"]["energy"] == pytest.approx(
            positive[inside].sum() / positive.sum(), rel=1e-9
        )
        assert box["scores"]["pointing_game"] == float(raw[inside].max() == raw.max())
    face, corner = body["boxes"]
    assert face["scores"]["energy"] > 5 * corner["scores"]["energy"]
    assert face["scores"]["pointing_game"] == 1.0
    assert body["heat_range"] == pytest.approx([raw.min(), raw.max()], rel=1e-6)
    figure = body["figure"]
    assert figure["layout"]["images"][0]["source"] == f"/api/images/{image['id']}/file"
    assert len(figure["layout"]["shapes"]) == 2


def test_same_request_is_cached_and_a_moved_box_is_rescored(
    app_client: TestClient, chelsea: dict[str, Any]
) -> None:
    image_id = chelsea["image"]["id"]
    store = app_client.app.state.store  # type: ignore[attr-defined]
    first = _post(app_client, image_id, method="l2").json()
    count = store.count_results(image_id)
    assert _post(app_client, image_id, method="l2").json() == first
    assert store.count_results(image_id) == count
    corner = chelsea["boxes"][1]
    moved = app_client.patch(f"/api/boxes/{corner['id']}", json={"x": 200, "y": 100})
    assert moved.status_code == 200, moved.text
    try:
        again = _post(app_client, image_id, method="l2").json()
        # rescored from the map in memory: cheaper to compute again than to store
        assert store.count_results(image_id) == count
        assert _post(app_client, image_id, method="l2").json() == again
        assert again["boxes"][1]["x"] == 200
        assert again["boxes"][1]["scores"]["energy"] > first["boxes"][1]["scores"]["energy"]
        assert again["boxes"][0]["scores"] == first["boxes"][0]["scores"]
    finally:
        app_client.patch(f"/api/boxes/{corner['id']}", json={"x": 0, "y": 0})


def test_scores_as_csv_match_the_json(app_client: TestClient, chelsea: dict[str, Any]) -> None:
    image_id = chelsea["image"]["id"]
    body = _post(app_client, image_id).json()
    response = app_client.get(
        f"/api/images/{image_id}/scores.csv", params={"layer": LAYER, "method": "gradcam"}
    )
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [int(r["box_id"]) for r in rows] == [b["id"] for b in body["boxes"]]
    for row, box in zip(rows, body["boxes"], strict=True):
        assert row["label"] == box["label"]
        for name in body["score_names"]:
            expected = box["scores"][name]
            assert (row[name] == "") if expected is None else float(row[name]) == expected
    post_csv = app_client.post(
        "/api/heatmaps/scores.csv", json={"image_id": image_id, "layer": LAYER, "method": "gradcam"}
    )
    assert post_csv.text == response.text


@pytest.mark.parametrize(
    ("change", "status", "hint"),
    [
        ({"layer": "nope"}, 404, "conv_stem"),
        ({"method": "nope"}, 404, "gradcam"),
        ({"model": "nope"}, 404, "efficientnet_lite0"),
        ({"target": 5000}, 422, "5000"),
        ({"image_id": 9999}, 404, "9999"),
        ({"mode": "stretch"}, 422, "resize"),
    ],
)
def test_bad_requests_are_4xx_naming_the_valid_choices(
    app_client: TestClient, chelsea: dict[str, Any], change: dict[str, Any], status: int, hint: str
) -> None:
    body = {"image_id": chelsea["image"]["id"], "layer": LAYER, "method": "gradcam", **change}
    response = app_client.post("/api/heatmaps", json=body)
    assert response.status_code == status, response.text
    assert hint in str(response.json()["detail"])


def test_image_without_boxes_and_method_list(app_client: TestClient, photo: Any) -> None:
    image = app_client.post(
        "/api/images", files={"file": ("coffee.png", photo.png("coffee"), "image/png")}
    ).json()
    body = _post(app_client, image["id"], method="mean").json()
    assert body["boxes"] == [] and body["target"] is None
    assert body["prediction"][0]["index"] == 967
    methods = {m["name"]: m for m in app_client.get("/api/heatmap-methods").json()}
    assert methods["gradcam"]["needs_gradients"] and not methods["mean"]["needs_target"]


def test_no_model_needed_for_unknown_image(data_dir: Path, client: TestClient) -> None:
    response = client.post("/api/heatmaps", json={"image_id": 1, "layer": LAYER})
    assert response.status_code == 404 and "1" in response.json()["detail"]


def test_png_overlay_has_the_image_size_and_differs_from_the_photo(
    app_client: TestClient, chelsea: dict[str, Any], photo: Any
) -> None:
    from PIL import Image

    image_id = chelsea["image"]["id"]
    response = app_client.post(
        "/api/heatmaps/png",
        params={"alpha": 0.6},
        json={"image_id": image_id, "layer": LAYER, "method": "gradcam"},
    )
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    picture = np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"))
    original = photo("chelsea")
    assert picture.shape == original.shape
    assert np.abs(picture.astype(int) - original.astype(int)).mean() > 10
    bad = app_client.post(
        "/api/heatmaps/png", params={"alpha": 2}, json={"image_id": image_id, "layer": LAYER}
    )
    assert bad.status_code == 422
