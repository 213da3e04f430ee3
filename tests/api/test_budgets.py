"""Every analysis endpoint past FEATUREGAP_MAX_REQUEST_BYTES is a 413 naming the setting and
starts no work (no decode, no forward pass); the same endpoints under the budget run."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from tests.api.helpers import module_app

BUDGET = 64 * 2**20
DECODE_BUDGET = 4 * 2**20
LAYERS = ["blocks.5.1.add", "conv_head"]


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def project(
    tmp_path_factory: pytest.TempPathFactory, photo: Any
) -> Iterator[tuple[TestClient, dict[str, Any]]]:
    """An app with a 64 MiB request budget; three textures (altered so that no other test's
    caches hold them), three labelled boxes on each."""
    with module_app(
        tmp_path_factory,
        "budgets",
        MAX_REQUEST_BYTES=str(BUDGET),
        MAX_DECODED_BYTES=str(DECODE_BUDGET),
    ) as client:
        ids: dict[str, Any] = {"labels": [], "images": []}
        for k, name in enumerate(("brick", "grass", "gravel")):
            array = photo(name)[::-1].copy()
            array[0, 0] = (k, 17, 201)  # a content no other test uploads
            image = client.post(
                "/api/images", files={"file": (f"{name}.png", _png(array), "image/png")}
            ).json()
            for box in (
                {"x": 10, "y": 12, "w": 201, "h": 157},
                {"x": 250.5, "y": 40, "w": 180, "h": 233},
                {"x": 60, "y": 300, "w": 317, "h": 199},
            ):
                client.post(f"/api/images/{image['id']}/boxes", json={**box, "label": name})
            ids["labels"].append(name)
            ids["images"].append(image["id"])
        yield client, ids


@pytest.fixture
def work(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Counts of decodes and of forward passes of the default model (its first conv)."""
    from app.engine.layers import list_layers
    from app.engine.models import get_model
    from app.store import Store

    model = get_model("efficientnet_lite0")
    list_layers(model)  # the layer list is cached once per process: not a request's work
    counts = {"decodes": 0, "forwards": 0}
    real = Store.load_decoded

    def counted(self: Store, image: Any, **kwargs: Any) -> Any:
        counts["decodes"] += 1
        return real(self, image, **kwargs)

    monkeypatch.setattr(Store, "load_decoded", counted)

    def hook(*_: Any) -> None:
        counts["forwards"] += 1

    handle = model.module.conv_stem.register_forward_hook(hook)
    yield counts
    handle.remove()


def _cases(ids: dict[str, Any]) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    labels, image = ids["labels"], ids["images"][0]
    return [
        (
            "/api/distances",
            {
                "labels": labels,
                "layer": "conv_head",
                "measure": "mutual_information",
                "descriptor": "grid",
                "grid_size": 16,
                "options": {"bins": 256},
            },
            {"labels": labels, "layer": "conv_head", "measure": "euclidean"},
        ),
        (
            "/api/distances",
            {
                "labels": labels,
                "layer": "conv_head",
                "measure": "mmd",
                "descriptor": "pixels",
                "grid_size": 16,
            },
            {
                "labels": labels,
                "layer": "conv_head",
                "measure": "mmd",
                "descriptor": "pixels",
                "grid_size": 2,
            },
        ),
        (
            "/api/separation",
            {"labels": labels, "layers": LAYERS, "descriptor": "grid", "grid_size": 16},
            {"labels": labels, "layers": LAYERS},
        ),
        (
            "/api/embeddings",
            {
                "labels": labels,
                "layer": "conv_head",
                "method": "tsne",
                "descriptor": "grid",
                "grid_size": 16,
            },
            # grid 2×2: descriptors no earlier case put in the feature store, so it decodes
            {
                "labels": labels,
                "layer": "conv_head",
                "method": "pca",
                "descriptor": "grid",
                "grid_size": 2,
            },
        ),
        (
            "/api/heatmaps",
            {"image_id": image, "layer": "conv_head", "method": "gradcam"},
            {"image_id": image, "layer": "conv_head", "method": "mean"},
        ),
        (
            "/api/heatmaps/png",
            {"image_id": image, "layer": "bn2", "method": "layercam"},
            {"image_id": image, "layer": "bn2", "method": "l2"},
        ),
        (
            "/api/predictions",
            {"image_id": image, "mode": "native"},
            {"image_id": image, "mode": "resize"},
        ),
    ]


@pytest.mark.slow
@pytest.mark.parametrize("case", range(7))
def test_over_budget_is_413_before_any_work_and_under_budget_runs(
    project: tuple[TestClient, dict[str, Any]], work: dict[str, int], case: int
) -> None:
    client, ids = project
    endpoint, over, under = _cases(ids)[case]
    refused = client.post(endpoint, json=over)
    assert refused.status_code == 413, refused.text
    detail = refused.json()["detail"]
    assert "FEATUREGAP_MAX_REQUEST_BYTES" in detail and "MiB" in detail
    assert work == {"decodes": 0, "forwards": 0}
    ran = client.post(endpoint, json=under)
    assert ran.status_code == 200, ran.text
    assert work["decodes"] > 0


def test_a_sixteen_bit_upload_past_the_decode_budget_is_413(
    project: tuple[TestClient, dict[str, Any]],
) -> None:
    client, _ = project
    values = np.random.default_rng(5).integers(0, 65536, (800, 1000), dtype=np.uint16)
    image = Image.fromarray(values)
    assert image.mode.startswith("I;16")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    answer = client.post(
        "/api/images", files={"file": ("deep.png", buffer.getvalue(), "image/png")}
    )
    assert answer.status_code == 413, answer.text
    assert "FEATUREGAP_MAX_DECODED_BYTES" in answer.json()["detail"]
    small = Image.fromarray(values[:300, :400])  # 300×400×8 bytes: under the budget
    buffer = io.BytesIO()
    small.save(buffer, format="PNG")
    assert (
        client.post(
            "/api/images", files={"file": ("small.png", buffer.getvalue(), "image/png")}
        ).status_code
        == 201
    )


def test_heatmap_methods_declare_their_options(project: tuple[TestClient, dict[str, Any]]) -> None:
    client, _ = project
    methods = {m["name"]: m for m in client.get("/api/heatmap-methods").json()}
    score = methods["scorecam"]["options"]["properties"]
    assert score["max_channels"]["maximum"] == 512 and score["max_channels"]["default"] == 64
    assert score["batch_size"]["maximum"] == 64
    assert methods["gradcam"]["options"].get("properties", {}) == {}


@pytest.mark.slow
def test_unknown_or_unbounded_method_options_are_422_before_work(
    project: tuple[TestClient, dict[str, Any]], work: dict[str, int]
) -> None:
    client, ids = project
    base = {"image_id": ids["images"][1], "layer": "conv_head"}
    answer = client.post("/api/heatmaps", json={**base, "method": "gradcam", "options": {"foo": 1}})
    assert answer.status_code == 422 and "'foo'" in answer.json()["detail"]
    assert "takes no options" in answer.json()["detail"]
    answer = client.post(
        "/api/heatmaps/png", json={**base, "method": "scorecam", "options": {"max_channels": 10**6}}
    )
    assert answer.status_code == 422
    assert "max_channels" in answer.json()["detail"] and "≤ 512" in answer.json()["detail"]
    answer = client.post(
        "/api/heatmaps/scores.csv", json={**base, "method": "scorecam", "options": {"channels": 3}}
    )
    assert answer.status_code == 422 and "batch_size" in answer.json()["detail"]
    assert work == {"decodes": 0, "forwards": 0}


@pytest.mark.slow
def test_scorecam_uses_the_channels_asked_for(
    project: tuple[TestClient, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.engine.cams import CamOptions
    from app.engine.heatmaps import compute_heatmap
    from app.engine.models import get_model
    from app.images import decode_image

    client, ids = project
    # Score-CAM's masked batches alone pass this module's 64 MiB budget
    monkeypatch.setattr(client.app.state.settings, "max_request_bytes", 2**30)  # type: ignore[attr-defined]
    image_id = ids["images"][2]
    body = {
        "image_id": image_id,
        "layer": "blocks.5.1.add",
        "method": "scorecam",
        "options": {"max_channels": 3, "batch_size": 2},
    }
    answer = client.post("/api/heatmaps", json=body)
    assert answer.status_code == 200, answer.text
    decoded = decode_image(client.get(f"/api/images/{image_id}/file").content, max_pixels=10**8)
    model = get_model("efficientnet_lite0")
    want = compute_heatmap(
        model,
        decoded,
        "blocks.5.1.add",
        "scorecam",
        options=CamOptions(max_channels=3, batch_size=2),
    ).values
    every = compute_heatmap(
        model, decoded, "blocks.5.1.add", "scorecam", options=CamOptions(max_channels=64)
    ).values
    got = answer.json()["heat_range"]
    assert got == pytest.approx([float(want.min()), float(want.max())], rel=1e-6, abs=1e-9)
    assert float(every.max()) != pytest.approx(got[1], rel=1e-3)


@pytest.mark.slow
def test_embedding_perplexity_is_bounded_by_the_boxes_before_work(
    project: tuple[TestClient, dict[str, Any]],
    work: dict[str, int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client, ids = project
    body = {"labels": ids["labels"], "layer": "conv_head", "method": "tsne"}
    answer = client.post("/api/embeddings", json={**body, "perplexity": 2.7})  # 9 boxes: ≤ 8/3
    assert answer.status_code == 422 and "(0, 2.67]" in answer.json()["detail"]
    assert client.post("/api/embeddings", json={**body, "n_iter": 10}).status_code == 422
    answer = client.post("/api/embeddings", json={**body, "labels": ids["labels"][:1]})
    assert answer.status_code == 422 and "at least 4 boxes" in answer.json()["detail"]
    assert work == {"decodes": 0, "forwards": 0}
    # openTSNE's own working set alone nearly fills this module's 64 MiB budget
    monkeypatch.setattr(client.app.state.settings, "max_request_bytes", 2**30)  # type: ignore[attr-defined]
    ran = client.post("/api/embeddings", json={**body, "perplexity": 2.6, "n_iter": 60})
    assert ran.status_code == 200, ran.text
