"""20 concurrent clients uploading, boxing and scoring against the live server: no error,
no lost row."""

from __future__ import annotations

import io
import re
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from benchmarks.live_server import live_server

pytestmark = pytest.mark.slow


CLIENTS = 20
SECONDS = 15.0


def _png(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def test_concurrent_clients_lose_nothing(tmp_path: Path) -> None:
    errors: list[str] = []
    made: dict[int, list[dict[str, Any]]] = {i: [] for i in range(CLIENTS)}
    scored = [0]
    lock = threading.Lock()
    with live_server(tmp_path / "data") as server:
        base = str(server.base_url)
        start = threading.Barrier(CLIENTS)

        def client_loop(index: int) -> None:
            with httpx.Client(base_url=base, timeout=120) as client:
                start.wait()
                deadline = time.monotonic() + SECONDS
                n = 0
                while time.monotonic() < deadline:
                    n += 1
                    try:
                        image = client.post(
                            "/api/images",
                            files={
                                "file": (f"c{index}-{n}.png", _png(index * 10_000 + n), "image/png")
                            },
                            data={"label": f"client{index}"},
                        )
                        if image.status_code != 201:
                            errors.append(f"upload {image.status_code} {image.text}")
                            continue
                        image_id = image.json()["id"]
                        box = client.post(
                            f"/api/images/{image_id}/boxes",
                            json={
                                "x": n % 30,
                                "y": 3,
                                "w": 20.5,
                                "h": 30,
                                "label": f"l{index % 3}",
                            },
                        )
                        if box.status_code != 201:
                            errors.append(f"box {box.status_code} {box.text}")
                            continue
                        made[index].append({"image": image_id, "box": box.json()["id"]})
                        if n % 4 == 1:
                            heat = client.post(
                                "/api/heatmaps",
                                json={"image_id": image_id, "layer": "conv_head", "method": "mean"},
                            )
                            if heat.status_code != 200:
                                errors.append(f"heatmap {heat.status_code} {heat.text}")
                            elif heat.json()["boxes"][0]["id"] != box.json()["id"]:
                                errors.append("heat map scored another box")
                            else:
                                with lock:
                                    scored[0] += 1
                    except httpx.HTTPError as exc:
                        errors.append(f"{type(exc).__name__}: {exc}")

        threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(CLIENTS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=SECONDS + 300)
        assert not any(t.is_alive() for t in threads)
        assert sorted(set(errors))[:5] == [] and errors == [], _first_server_error(tmp_path)
        rows = [row for rows in made.values() for row in rows]
        assert len(rows) >= CLIENTS and scored[0] >= CLIENTS // 2
        every = {"limit": 1000}
        images = {i["id"] for i in server.get("/api/images", params=every).json()["items"]}
        boxes = {b["id"]: b for b in server.get("/api/boxes", params=every).json()["items"]}
        assert {r["image"] for r in rows} == images
        assert {r["box"] for r in rows} == set(boxes)
        for r in rows:
            assert boxes[r["box"]]["image_id"] == r["image"]


def _first_server_error(tmp_path: Path) -> str:
    """The first traceback the server logged (CI shows only the test's output)."""
    for log in tmp_path.glob("server-*.log"):
        found = re.search(r"Traceback \(most recent.*\n(?:[ \t].*\n)+\S.*", log.read_text())
        if found:
            return "the server logged:\n" + found.group()[-4000:]
    return "the server logged no traceback"
