"""POST /api/extractions: a job that fills the feature store, with progress and cancel."""

from __future__ import annotations

import time
from typing import Any

import pytest
from fastapi.testclient import TestClient

pytestmark = pytest.mark.slow


def _wait(client: TestClient, job_id: str) -> dict[str, Any]:
    for _ in range(1200):
        job: dict[str, Any] = client.get(f"/api/jobs/{job_id}").json()
        if job["state"] not in ("queued", "running"):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish")


def test_extraction_job_fills_the_store(client: TestClient, upload: Any) -> None:
    for name in ("chelsea", "coffee"):
        image = upload(name)
        for label in ("x", "y"):
            response = client.post(
                f"/api/images/{image['id']}/boxes",
                json={"x": 11, "y": 17, "w": 90, "h": 61, "label": label},
            )
            assert response.status_code == 201, response.text
    body = {"labels": ["x"], "layers": ["blocks.5.0.conv_pw", "conv_head"], "batch_size": 2}
    response = client.post("/api/extractions", json=body)
    assert response.status_code == 202, response.text
    job = _wait(client, response.json()["job_id"])
    assert job["state"] == "done", job
    assert job["progress"] == 1.0
    result = job["result"]
    assert {k: result[k] for k in ("boxes", "layers", "images", "extracted", "present")} == {
        "boxes": 2,
        "layers": 2,
        "images": 2,
        "extracted": 4,
        "present": 0,
    }
    every = client.post("/api/extractions", json={**body, "labels": None})
    assert _wait(client, every.json()["job_id"])["result"]["present"] == 4
    store = client.app.state.store  # type: ignore[attr-defined]
    assert store.features.stats().rows == 8


def test_extraction_job_can_be_cancelled(client: TestClient, upload: Any) -> None:
    from app.service.heatmaps import ENGINE_LOCK

    for name in ("astronaut", "rocket"):
        image = upload(name)
        client.post(
            f"/api/images/{image['id']}/boxes",
            json={"x": 1, "y": 1, "w": 50, "h": 50, "label": "x"},
        )
    with ENGINE_LOCK:  # the job cannot pass its first forward until the cancel is in
        job_id = client.post(
            "/api/extractions", json={"layers": ["conv_head"], "batch_size": 1}
        ).json()["job_id"]
        assert client.delete(f"/api/jobs/{job_id}").status_code == 200
    job = _wait(client, job_id)
    assert job["state"] == "cancelled", job
    store = client.app.state.store  # type: ignore[attr-defined]
    assert store.features.stats().rows <= 1  # at most the batch that was running


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"layers": ["nope"]}, 404, "unknown layer 'nope'"),
        ({"layers": []}, 422, "layers"),
        ({"layers": ["conv_head"], "box_ids": [1], "labels": ["x"]}, 422, "either box_ids"),
        ({"layers": ["conv_head"], "box_ids": [99]}, 404, "no boxes with ids [99]"),
        ({"layers": ["conv_head"], "descriptor": "mean"}, 422, "descriptor"),
    ],
)
def test_bad_extraction_requests_are_4xx(
    client: TestClient, body: dict[str, Any], status: int, words: str
) -> None:
    response = client.post("/api/extractions", json=body)
    assert response.status_code == status, response.text
    assert words in response.text
