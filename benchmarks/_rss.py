"""One API request in a fresh process: its peak RSS growth and its budget estimate.

Run as ``python -m benchmarks._rss '<json spec>'``; prints one JSON line. The spec names the
images (``[[width, height], ...]``, smooth random JPEGs), boxes per label, the endpoint and
its body (``{labels}`` and ``{image_id}`` are filled in). Before the request the process has
loaded the model, listed its layers and answered a tiny request, then its peak RSS
(``VmHWM``) is reset through ``/proc/self/clear_refs``; the growth is the peak during the
request minus the RSS just before it.
"""

from __future__ import annotations

import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _jpeg(width: int, height: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(2, height // 64), max(2, width // 64), 3), dtype=np.uint8)
    picture = Image.fromarray(small).resize((width, height), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=80)
    return buffer.getvalue()


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """Set up a store as ``spec`` says, then run its one request and measure it."""
    os.environ["FEATUREGAP_DATA_DIR"] = tempfile.mkdtemp(prefix="fg-rss-")
    for key, value in spec.get("settings", {}).items():
        os.environ[f"FEATUREGAP_{key.upper()}"] = str(value)
    from fastapi.testclient import TestClient

    from app.config import get_settings
    from app.main import create_app
    from app.store import Store

    settings = get_settings()
    store = Store(settings)
    image_ids = []
    for i, (width, height) in enumerate(spec["images"]):
        record, _ = store.add_image(_jpeg(width, height, i), f"img{i}.jpg")
        image_ids.append(record.id)
    labels = [f"l{k}" for k in range(len(spec.get("boxes", [])))]
    for label, count in zip(labels, spec.get("boxes", []), strict=True):
        for j in range(count):
            image = store.get_image(image_ids[j % len(image_ids)])
            k = j // len(image_ids)
            w = max(8.0, image.width / 8)
            h = max(8.0, image.height / 8)
            store.add_box(
                image.id,
                (k * 7.0) % (image.width - w),
                (k * 11.0) % (image.height - h),
                w,
                h,
                label,
            )
    warm_id = store.add_image(_jpeg(64, 48, 99), "warm.jpg")[0].id
    body = json.loads(
        json.dumps(spec["body"])
        .replace('"{labels}"', json.dumps(labels))
        .replace('"{image_id}"', str(image_ids[0]))
    )
    estimate = _estimate(store, settings, spec["endpoint"], body)
    with TestClient(create_app(settings)) as client:
        warm = {"image_id": warm_id, "model": "efficientnet_lite0", "k": 1}
        assert client.post("/api/predictions", json=warm).status_code == 200
        Path("/proc/self/clear_refs").write_text("5")
        before = _status("VmRSS")
        start = time.perf_counter()
        response = client.post(spec["endpoint"], json=body)
        took = time.perf_counter() - start
        peak = _status("VmHWM")
    return {
        "status": response.status_code,
        "growth": peak - before,
        "seconds": took,
        "estimate": estimate,
        "detail": response.json().get("detail") if response.status_code >= 400 else None,
    }


def _estimate(store: Any, settings: Any, endpoint: str, body: dict[str, Any]) -> int:
    """The budget estimate (bytes) of the request, as the route computes it."""
    from app.engine.models import get_model
    from app.service import analysis
    from app.service.estimates import heatmap_budget, prediction_budget

    model = get_model(body.get("model", "efficientnet_lite0"))
    settings = settings.model_copy(update={"max_request_bytes": 2**62})
    if endpoint == "/api/distances":
        fields = {
            k: body[k]
            for k in (
                "measure",
                "descriptor",
                "grid_size",
                "options",
                "permutations",
                "bootstrap",
                "mode",
            )
            if k in body
        }
        request = analysis.DistanceRequest(
            body.get("model", "efficientnet_lite0"), body["layer"], **fields
        )
        groups = analysis.resolve_groups(store, None, body["labels"])
        return analysis.estimate_distances(store, settings, model, request, groups).bytes
    if endpoint == "/api/separation":
        fields = {
            k: body[k]
            for k in ("measure", "descriptor", "grid_size", "options", "mode")
            if k in body
        }
        separation = analysis.SeparationRequest(
            body.get("model", "efficientnet_lite0"), body["layers"], **fields
        )
        groups = analysis.resolve_groups(store, None, body["labels"])
        return analysis.estimate_separation(store, settings, model, separation, groups).bytes
    if endpoint == "/api/embeddings":
        fields = {k: body[k] for k in ("method", "descriptor", "grid_size", "mode") if k in body}
        embedding = analysis.EmbeddingRequest(
            body.get("model", "efficientnet_lite0"), body["layer"], **fields
        )
        boxes = store.boxes(labels=body["labels"])
        return analysis.estimate_embedding(store, settings, model, boxes, embedding).bytes
    image = store.get_image(body["image_id"])
    if endpoint == "/api/heatmaps":
        return heatmap_budget(
            settings, model, image, method=body["method"], mode=body.get("mode", "resize")
        ).bytes
    return prediction_budget(settings, model, image, body.get("mode", "resize")).bytes


if __name__ == "__main__":
    print(json.dumps(measure(json.loads(sys.argv[1]))))
