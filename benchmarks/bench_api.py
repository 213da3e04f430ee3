"""API latency against a running server (uvicorn in a subprocess), features cached.

* ``POST /api/distances``, 2 groups × 50 boxes (MMD on ``pixels``), features cached: each
  request uses another ``seed``, so the results table cannot answer it and the descriptors
  and the measure are recomputed. Goal: p50 < 150 ms.
* ``POST /api/heatmaps`` for a cached image (Grad-CAM map in memory): one box moves before
  each request, so the scores and the figure are recomputed; goal: p50 < 100 ms. Also
  shown: the same request repeated (answered by the results table) and a map computed from
  scratch (another target class each time), for scale.
"""

from __future__ import annotations

import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from benchmarks.live_server import live_server

LAYER = "conv_head"


def _png(name: str) -> bytes:
    import io

    import numpy as np
    from PIL import Image
    from skimage import data

    image = np.asarray(getattr(data, name)())
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    buffer = io.BytesIO()
    Image.fromarray(image[..., :3].astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _times(fn: Callable[[int], httpx.Response], n: int) -> list[float]:
    out = []
    for i in range(n):
        start = time.perf_counter()
        response = fn(i)
        out.append((time.perf_counter() - start) * 1000)
        if response.status_code != 200:
            raise RuntimeError(f"{response.status_code}: {response.text[:300]}")
    return out


def _report(name: str, ms: list[float], goal: float | None) -> None:
    ordered = sorted(ms)
    p50 = statistics.median(ordered)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    ratio = f", p50/goal {p50 / goal:.2f} ({'met' if p50 < goal else 'MISSED'})" if goal else ""
    print(f"{name}: n={len(ms)} p50 {p50:.1f} ms, p99 {p99:.1f} ms{ratio}", flush=True)


def main() -> None:
    """Start a server on a temporary data directory and time the two requests."""
    with tempfile.TemporaryDirectory() as tmp:
        with live_server(Path(tmp) / "data", start_timeout=120, client_timeout=300) as client:
            _run(client)


def _run(client: httpx.Client) -> None:
    rng = random.Random(0)
    groups: dict[str, list[int]] = {}
    for name in ("brick", "grass"):
        image = client.post(
            "/api/images", files={"file": (f"{name}.png", _png(name), "image/png")}
        ).json()
        groups[name] = [
            client.post(
                f"/api/images/{image['id']}/boxes",
                json={
                    "x": rng.uniform(0, 380),
                    "y": rng.uniform(0, 380),
                    "w": rng.uniform(40, 130),
                    "h": rng.uniform(40, 130),
                    "label": name,
                },
            ).json()["id"]
            for _ in range(50)
        ]
    body = {"groups": groups, "layer": LAYER, "measure": "mmd", "descriptor": "pixels"}
    _times(lambda i: client.post("/api/distances", json={**body, "seed": 10_000 + i}), 2)
    _report(
        "distances 2×50 boxes, features cached",
        _times(lambda i: client.post("/api/distances", json={**body, "seed": i}), 30),
        150,
    )

    cat = client.post(
        "/api/images", files={"file": ("chelsea.png", _png("chelsea"), "image/png")}
    ).json()
    box = client.post(
        f"/api/images/{cat['id']}/boxes",
        json={"x": 140, "y": 20, "w": 180, "h": 210, "label": "cat"},
    ).json()
    client.post(
        f"/api/images/{cat['id']}/boxes", json={"x": 0, "y": 0, "w": 60, "h": 60, "label": "corner"}
    )
    heat = {"image_id": cat["id"], "layer": LAYER, "method": "gradcam"}
    client.post("/api/heatmaps", json=heat)

    def moved(i: int) -> httpx.Response:
        client.patch(f"/api/boxes/{box['id']}", json={"x": 100 + i})
        start = time.perf_counter()
        response = client.post("/api/heatmaps", json=heat)
        moved.elapsed.append((time.perf_counter() - start) * 1000)  # type: ignore[attr-defined]
        return response

    moved.elapsed = []  # type: ignore[attr-defined]
    _times(moved, 30)
    _report("heat map, cached image, a box moved (rescored)", moved.elapsed, 100)  # type: ignore[attr-defined]
    _report(
        "heat map, same request again (results table)",
        _times(lambda i: client.post("/api/heatmaps", json=heat), 30),
        None,
    )
    _report(
        "heat map computed (another target each time)",
        _times(lambda i: client.post("/api/heatmaps", json={**heat, "target": 300 + i}), 5),
        None,
    )


if __name__ == "__main__":
    main()
