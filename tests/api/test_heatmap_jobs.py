"""Long heat maps as jobs: Score-CAM over many channels answers 202, its job reports
``batch k of K`` as it goes, and DELETE stops it between batches; small requests answer 200
with the answer they always had."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.api.helpers import module_app
from tests.engine.scorecam_passes import masked_passes

pytestmark = pytest.mark.slow

BATCH = re.compile(r"^Score-CAM batch (\d+) of (\d+)$")


@pytest.fixture(scope="module")
def app_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """One app on its own data directory (the model loads once), default settings."""
    with module_app(tmp_path_factory, "heatjobs") as client:
        yield client


@pytest.fixture(scope="module")
def chelsea(app_client: TestClient, photo: Any) -> dict[str, Any]:
    image = app_client.post(
        "/api/images", files={"file": ("chelsea.png", photo.png("chelsea"), "image/png")}
    ).json()
    app_client.post(
        f"/api/images/{image['id']}/boxes",
        json={"x": 140, "y": 20, "w": 180, "h": 210, "label": "cat"},
    )
    return dict(image)


@pytest.fixture
def masked_batches(app_client: TestClient) -> Iterator[list[int]]:
    """Sizes of the batches of masked inputs Score-CAM forwards (through the model's folded
    logits extractor, which only they take)."""
    from app.engine.models import get_model

    with masked_passes(get_model("efficientnet_lite0").module) as sizes:
        yield sizes


def test_all_channel_scorecam_is_a_job_whose_progress_rises_and_delete_stops_it(
    app_client: TestClient, chelsea: dict[str, Any], masked_batches: list[int]
) -> None:
    body = {
        "image_id": chelsea["id"],
        "layer": "bn2",
        "method": "scorecam",
        "options": {"max_channels": 512, "batch_size": 8},
    }
    answer = app_client.post("/api/heatmaps", json=body)
    assert answer.status_code == 202, answer.text
    job_id = answer.json()["job_id"]
    seen: list[tuple[float, int, int]] = []  # (progress, k, K) of each batch message seen
    deadline = time.monotonic() + 120
    while not seen or seen[-1][1] < 3:
        job = app_client.get(f"/api/jobs/{job_id}").json()
        assert job["state"] in ("queued", "running"), job
        found = BATCH.match(job["message"])
        if found and (not seen or int(found[1]) != seen[-1][1]):
            seen.append((job["progress"], int(found[1]), int(found[2])))
        assert time.monotonic() < deadline, seen
        time.sleep(0.02)
    total = seen[-1][2]
    # 512 channels of the 1,280 of bn2, constant ones skipped, in batches of 8
    assert 32 < total <= 64
    for progress, k, of in seen:
        assert of == total
        # the map is 0.9 of the answer; batch k starts at 0.02 + 0.98·(k−1)/K of the map
        assert progress == pytest.approx(0.9 * (0.02 + 0.98 * (k - 1) / total), abs=1e-9)
    assert [p for p, _, _ in seen] == sorted(p for p, _, _ in seen) and len(seen) >= 2

    asked = time.monotonic()
    cancelling = app_client.delete(f"/api/jobs/{job_id}").json()
    assert cancelling["state"] in ("running", "cancelled")
    while (job := app_client.get(f"/api/jobs/{job_id}").json())["state"] == "running":
        assert time.monotonic() - asked < 10, job
        time.sleep(0.02)
    stopped_after = time.monotonic() - asked
    assert job["state"] == "cancelled" and job["result"] is None, job
    ran = len(masked_batches)
    time.sleep(1.0)
    # the computation stopped: no batch ran after the cancel was seen, and most never did
    assert len(masked_batches) == ran and ran < total, (ran, total)
    assert all(size == 8 for size in masked_batches)
    # a cancel stops it between two batches: at most one batch's time (under a second
    # on a quiet machine; the bound leaves room for a loaded one)
    assert stopped_after < 10
    # nothing stale was kept: the same request is a job again
    again = app_client.post("/api/heatmaps", json=body)
    assert again.status_code == 202
    app_client.delete(f"/api/jobs/{again.json()['job_id']}")


def test_small_requests_answer_at_once_as_before_and_a_job_gives_the_same_answer(
    app_client: TestClient, chelsea: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.api.heatmaps import HeatmapOut
    from app.config import Settings
    from app.engine.models import get_model
    from app.service.heatmaps import HeatmapRequest, heatmap_result
    from app.store import Store

    body = {"image_id": chelsea["id"], "layer": "conv_head", "method": "gradcam"}
    answer = app_client.post("/api/heatmaps", json=body)
    assert answer.status_code == 200, answer.text
    # what the route answered before it could queue: the service's answer as HeatmapOut
    store: Store = app_client.app.state.store  # type: ignore[attr-defined]
    model = get_model("efficientnet_lite0")
    image = store.get_image(chelsea["id"], counts=False)
    direct = heatmap_result(
        store,
        model,
        image,
        HeatmapRequest("efficientnet_lite0", "conv_head", "gradcam", options=()),
        store.boxes(image_id=image.id),
    )
    assert answer.json() == HeatmapOut(**direct).model_dump(mode="json")

    # A Score-CAM of 12 channels costs 2 + 12 forward passes of EfficientNet-Lite0's
    # 385,187,552 multiply-adds (torch's FlopCounterMode counts the same, test_heatmap_work):
    # ceil(14 · 385,187,552 / 2**24) = 322 units; the threshold flips at 322/321 below.
    settings: Settings = app_client.app.state.settings  # type: ignore[attr-defined]
    few = {
        **body,
        "layer": "blocks.5.1.add",
        "method": "scorecam",
        "options": {"max_channels": 12, "batch_size": 4},
    }
    monkeypatch.setattr(settings, "heatmap_job_threshold", 322)
    at_once = app_client.post("/api/heatmaps", json={**few, "target": 281})
    assert at_once.status_code == 200, at_once.text
    monkeypatch.setattr(settings, "heatmap_job_threshold", 321)
    queued = app_client.post("/api/heatmaps", json={**few, "target": 282})
    assert queued.status_code == 202, queued.text
    job = app_client.app.state.jobs.wait(queued.json()["job_id"], 120)  # type: ignore[attr-defined]
    assert job.state == "done" and job.progress == 1.0, job
    # its map is kept now: the same request answers at once, with the job's answer
    kept = app_client.post("/api/heatmaps", json={**few, "target": 282})
    assert kept.status_code == 200
    result = app_client.get(f"/api/jobs/{queued.json()['job_id']}").json()["result"]
    assert kept.json() == result and result["target"] == 282
    assert result["heat_range"] != at_once.json()["heat_range"]  # another class explained

    # a request that would be a job but cannot work is refused before queueing
    bad = app_client.post("/api/heatmaps", json={**few, "target": 1000})
    assert bad.status_code == 422, bad.text
    assert bad.json()["detail"] == (
        "target 1000 is out of range; the model has 1000 classes (0 to 999)"
    )
