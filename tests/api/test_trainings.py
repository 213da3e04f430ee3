"""/api/trainings on a small torchvision model from the models folder (random weights):
the job, its live curve, the saved model used by another view, "what moved", cancel, 4xx."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

LAYER = "features.12.cat"


@pytest.fixture
def client(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    """An app whose models folder holds ``sq``: SqueezeNet 1.1 with seeded random weights."""
    from safetensors.torch import save_file

    from app.config import get_settings
    from app.engine.models import _build
    from app.main import create_app

    folder = data_dir.parent / "models"
    folder.mkdir(parents=True)
    torch.manual_seed(0)
    module = _build("squeezenet1_1", "torchvision", 2)
    save_file(
        {k: v.contiguous() for k, v in module.state_dict().items()}, folder / "sq.safetensors"
    )
    sidecar = {
        "architecture": "squeezenet1_1",
        "input_size": 64,
        "class_names": ["warm", "cool"],
        "weights": "sq.safetensors",
    }
    (folder / "sq.json").write_text(json.dumps(sidecar))
    monkeypatch.setenv("FEATUREGAP_MODELS_DIR", str(folder))
    get_settings.cache_clear()
    with TestClient(create_app(get_settings())) as test_client:
        _images(test_client)
        yield test_client
    get_settings.cache_clear()


def _images(client: TestClient) -> None:
    store = client.app.state.store  # type: ignore[attr-defined]
    rng = np.random.default_rng(0)
    for k in range(8):
        label = "warm" if k % 2 else "cool"
        base = (130, 100, 90) if label == "warm" else (90, 100, 130)
        pixels = rng.normal(base, 40, size=(80, 88, 3)).clip(0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        record, _ = store.add_image(buffer.getvalue(), f"{label}{k}.png")
        store.add_boxes(record.id, [(4 * j, 6, 40, 44, label) for j in range(3)])


def _body(**extra: object) -> dict[str, object]:
    return {
        "model": "sq",
        "layer": LAYER,
        "epochs": 2,
        "lr": 1e-3,
        "batch_size": 8,
        "crop_size": 64,
        "eval_layers": ["features.5", LAYER],
        **extra,
    }


def test_a_training_job_saves_a_model_that_every_view_can_use(client: TestClient) -> None:
    jobs = client.app.state.jobs  # type: ignore[attr-defined]
    answer = client.post("/api/trainings", json=_body(name="sq-tuned"))
    assert answer.status_code == 202, answer.text
    accepted = answer.json()
    assert accepted["model"] == "sq-tuned"
    # the last stage (after the last max-pool): Fire modules 9 to 12
    assert accepted["trained"] == [
        f"features.{i}.{part}"
        for i in (9, 10, 11, 12)
        for part in ("squeeze", "expand1x1", "expand3x3")
    ]
    assert accepted["train_boxes"] + accepted["held_out_boxes"] == 24
    assert accepted["held_out_boxes"] == 6  # 2 of 8 images, 3 boxes each
    record = jobs.wait(accepted["job_id"], timeout=300)
    assert record.state == "done", record.error
    status = client.get(f"/api/trainings/{accepted['job_id']}").json()
    steps = 2 * -(-accepted["train_boxes"] // 8)
    assert [p["step"] for p in status["curve"]] == list(range(1, steps + 1))
    result = status["result"]
    assert result["model"] == "sq-tuned" and result["base"] == "sq"
    assert [r["layer"] for r in result["held_out"]["layers"]] == ["features.5", LAYER]
    below = result["held_out"]["layers"][0]
    assert below["ratio_after"] == pytest.approx(below["ratio_before"], rel=1e-6)  # frozen

    assert "sq-tuned" in [m["name"] for m in client.get("/api/models").json()]
    sep = client.post(
        "/api/separation", json={"model": "sq-tuned", "layers": [LAYER], "labels": ["warm", "cool"]}
    )
    assert sep.status_code == 200, sep.text
    assert sep.json()["layers"][0]["ratio"] is not None

    moved = client.post(
        "/api/trainings/moved", json={"job_id": accepted["job_id"], "permutations": 20}
    )
    assert moved.status_code == 200, moved.text
    body = moved.json()
    assert (body["before"], body["after"]) == ("sq", "sq-tuned")
    assert body["layers"][-1]["ratio_after"] == pytest.approx(
        result["held_out"]["layers"][-1]["ratio_after"]
    )
    assert body["distances"]["before"]["p_values"] is not None
    before_points = body["scatter"]["before"]["points"]
    after_points = body["scatter"]["after"]["points"]
    assert [p["box_id"] for p in before_points] == [p["box_id"] for p in after_points]
    assert len(after_points) == accepted["held_out_boxes"]
    names = {t["name"] for t in body["figure"]["data"]}
    assert any(n.endswith("· sq") for n in names) and any(n.endswith("· sq-tuned") for n in names)
    # One held-out image (every one holds 3 boxes: the lowest id) under both models, the
    # same class explained by both: what POST /api/heatmaps answers for each model.
    heat = body["heatmaps"]
    held_images = {p["image_id"] for p in after_points}
    assert heat["image_id"] == min(held_images)
    assert (heat["layer"], heat["method"]) == (LAYER, "gradcam")
    top = heat["before"]["prediction"][0]["index"]
    assert heat["target"] == top == heat["after"]["target"]
    for key, name in (("before", "sq"), ("after", "sq-tuned")):
        alone = client.post(
            "/api/heatmaps",
            json={"image_id": heat["image_id"], "model": name, "layer": LAYER, "target": top},
        )
        assert alone.status_code == 200, alone.text
        assert heat[key]["model"] == name
        assert heat[key]["boxes"] == alone.json()["boxes"]
        assert heat[key]["heat_range"] == alone.json()["heat_range"]
    assert heat["before"]["heat_range"] != heat["after"]["heat_range"]  # the stage trained
    chosen = client.post(
        "/api/trainings/moved",
        json={
            "job_id": accepted["job_id"],
            "scatter": None,
            "heatmap": {"method": "mean", "layer": "features.5", "image_id": 1},
        },
    ).json()["heatmaps"]
    assert (chosen["image_id"], chosen["layer"], chosen["target"]) == (1, "features.5", None)
    # below the trained stage nothing moved
    assert chosen["before"]["boxes"] == chosen["after"]["boxes"]
    bare = client.post("/api/trainings/moved", json={"job_id": accepted["job_id"], "heatmap": None})
    assert "heatmaps" not in bare.json()

    again = client.post("/api/trainings", json=_body(name="sq-tuned"))
    assert again.status_code == 409 and "already exists" in again.json()["detail"]


def test_cancel_stops_the_job_and_saves_nothing(client: TestClient) -> None:
    jobs = client.app.state.jobs  # type: ignore[attr-defined]
    answer = client.post("/api/trainings", json=_body(name="sq-long", epochs=200))
    assert answer.status_code == 202, answer.text
    job_id = answer.json()["job_id"]
    twin = client.post("/api/trainings", json=_body(name="sq-long"))
    assert twin.status_code == 409 and "already queued or running" in twin.json()["detail"]
    cancel = client.delete(f"/api/trainings/{job_id}")
    assert cancel.status_code == 200
    assert jobs.wait(job_id, timeout=120).state == "cancelled"
    assert "sq-long" not in [m["name"] for m in client.get("/api/models").json()]
    # The name is free again once the job has stopped.
    again = client.post("/api/trainings", json=_body(name="sq-long", epochs=1))
    assert again.status_code == 202, again.text
    assert jobs.wait(again.json()["job_id"], timeout=300).state == "done"


@pytest.mark.parametrize(
    ("extra", "status", "words"),
    [
        ({"layer": "nope"}, 404, "unknown layer"),
        ({"model": "nope"}, 404, "unknown model"),
        ({"objective": "mmd"}, 422, "two different labels"),
        ({"objective": "mmd", "domains": ["warm", "x"]}, 422, "domain"),
        ({"labels": ["warm"]}, 422, "two labels"),
        ({"after": LAYER}, 422, "before the layer"),
        ({"name": "../x"}, 422, "must start"),
        ({"holdout_image_ids": [999]}, 422, "holdout_image_ids"),
        ({"epochs": 0}, 422, "epochs"),
    ],
)
def test_bad_requests_are_refused_before_queueing(
    client: TestClient, extra: dict[str, object], status: int, words: str
) -> None:
    answer = client.post("/api/trainings", json=_body(**extra))
    assert answer.status_code == status, answer.text
    assert words in json.dumps(answer.json()["detail"])


def test_other_jobs_are_not_trainings(client: TestClient) -> None:
    assert client.get("/api/trainings/nope").status_code == 404
    extraction = client.post(
        "/api/extractions", json={"model": "sq", "layers": [LAYER], "labels": ["warm"]}
    )
    assert extraction.status_code == 202
    job_id = extraction.json()["job_id"]
    answer = client.get(f"/api/trainings/{job_id}")
    assert answer.status_code == 404 and "not a training" in answer.json()["detail"]
    refused = client.post("/api/trainings/moved", json={"job_id": job_id})
    assert refused.status_code == 422
