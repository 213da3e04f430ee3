"""The real server in a subprocess: upload, box, analyse, restart, find everything again."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from benchmarks.live_server import live_server

pytestmark = pytest.mark.slow

# Asked before and after the restart: the answers must be the same.
DISTANCES = {
    "labels": ["brick", "grass"],
    "layer": "conv_head",
    "measure": "mmd",
    "permutations": 19,
    "seed": 1,
}
EMBEDDING = {"labels": ["brick", "grass"], "layer": "conv_head", "method": "pca"}


def _ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def test_work_survives_a_restart(tmp_path: Path, photo: Any) -> None:
    data = tmp_path / "data"
    with live_server(data) as client:
        images = {
            name: _ok(
                client.post(
                    "/api/images", files={"file": (f"{name}.png", photo.png(name), "image/png")}
                ),
                201,
            )
            for name in ("chelsea", "brick", "grass")
        }
        face = _ok(
            client.post(
                f"/api/images/{images['chelsea']['id']}/boxes",
                json={"x": 140, "y": 20, "w": 180, "h": 210, "label": "cat"},
            ),
            201,
        )
        for name in ("brick", "grass"):
            for x in (0, 200):
                _ok(
                    client.post(
                        f"/api/images/{images[name]['id']}/boxes",
                        json={"x": x, "y": 50, "w": 150, "h": 170, "label": name},
                    ),
                    201,
                )
        heat_body = {"image_id": images["chelsea"]["id"], "layer": "conv_head", "method": "gradcam"}
        heat = _ok(client.post("/api/heatmaps", json=heat_body))
        assert heat["boxes"][0]["id"] == face["id"] and heat["boxes"][0]["scores"]["energy"] > 0
        dist = _ok(client.post("/api/distances", json=DISTANCES))
        # Each label's boxes sit on one image: no test between the labels is possible.
        assert dist["unit"] == "image" and dist["p_values"][0][1] is None
        assert any("single image" in w for w in dist["warnings"])
        emb = _ok(client.post("/api/embeddings", json=EMBEDDING))
        assert len(emb["points"]) == 4
        boxes_before = _ok(client.get("/api/boxes"))["items"]

    with live_server(data) as client:
        listed = {image["filename"]: image for image in _ok(client.get("/api/images"))["items"]}
        assert set(listed) == {"chelsea.png", "brick.png", "grass.png"}
        assert _ok(client.get("/api/boxes"))["items"] == boxes_before
        assert client.get(f"/api/images/{images['brick']['id']}/file").content == photo.png("brick")
        store_rows = _ok(client.post("/api/heatmaps", json=heat_body))
        assert store_rows == heat  # the same answers after the restart
        assert _ok(client.post("/api/distances", json=DISTANCES)) == dist
        assert _ok(client.post("/api/embeddings", json=EMBEDDING)) == emb
