"""Answers say when a layer is too coarse for the boxes (1×1 maps, boxes under one cell)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

pytestmark = pytest.mark.slow


def _client_with_boxes(photo: Any) -> tuple[TestClient, int]:
    from app.config import get_settings
    from app.main import create_app

    client = TestClient(create_app(get_settings()))
    image = client.post(
        "/api/images", files={"file": ("chelsea.png", photo.png("chelsea"), "image/png")}
    ).json()
    for box, label in (
        ({"x": 140, "y": 20, "w": 180, "h": 210}, "cat"),
        ({"x": 10, "y": 250, "w": 20, "h": 30}, "cat"),
        ({"x": 300, "y": 250, "w": 100, "h": 45}, "floor"),
    ):
        client.post(f"/api/images/{image['id']}/boxes", json={**box, "label": label})
    return client, image["id"]


def test_heat_map_and_distances_warn_at_a_1x1_layer(data_dir: Path, photo: Any) -> None:
    client, image_id = _client_with_boxes(photo)
    with client:
        heat = client.post(
            "/api/heatmaps",
            json={"image_id": image_id, "layer": "global_pool.pool", "method": "mean"},
        ).json()
        assert any("1×1" in w for w in heat["warnings"])
        dist = client.post(
            "/api/distances",
            json={"labels": ["cat", "floor"], "layer": "global_pool.pool", "measure": "euclidean"},
        ).json()
        assert any("1×1" in w and "compare images" in w for w in dist["warnings"])


def test_boxes_smaller_than_a_cell_are_counted(data_dir: Path, photo: Any) -> None:
    client, image_id = _client_with_boxes(photo)
    with client:
        # conv_head is 7×7 at 224: a cell of chelsea (451×300) is about 64×43 pixels.
        heat = client.post(
            "/api/heatmaps", json={"image_id": image_id, "layer": "conv_head", "method": "mean"}
        ).json()
        (warning,) = heat["warnings"]
        assert warning.startswith("1 of 3 boxes are smaller than one feature cell")
        assert "0.31×0.70 cells" in warning
        fine = client.post(
            "/api/heatmaps",
            json={"image_id": image_id, "layer": "blocks.1.0.bn2", "method": "mean"},
        ).json()
        assert fine["warnings"] == []
