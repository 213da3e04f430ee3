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

BUDGET = 64 * 2**20
DECODE_BUDGET = 4 * 2**20
LAYERS = ["blocks.5.1.add", "conv_head"]


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, photo: Any
            ) -> Iterator[tuple[TestClient, dict[str, Any]]]:
    """An app with a 64 MiB request budget; three textures (altered so that no other test's
    caches hold them), three labelled boxes on each."""
    from app.config import get_settings
    from app.main import create_app

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FEATUREGAP_DATA_DIR", str(tmp_path_factory.mktemp("budgets") / "data"))
        patch.setenv("FEATUREGAP_MAX_REQUEST_BYTES", str(BUDGET))
        patch.setenv("FEATUREGAP_MAX_DECODED_BYTES", str(DECODE_BUDGET))
        get_settings.cache_clear()
        with TestClient(create_app(get_settings())) as client:
            ids: dict[str, Any] = {"labels": [], "images": []}
            for k, name in enumerate(("brick", "grass", "gravel")):
                array = photo(name)[::-1].copy()
                array[0, 0] = (k, 17, 201)  # a content no other test uploads
                image = client.post("/api/images", files={
                    "file": (f"{name}.png", _png(array), "image/png")}).json()
                for box in ({"x": 10, "y": 12, "w": 201, "h": 157},
                            {"x": 250.5, "y": 40, "w": 180, "h": 233},
                            {"x": 60, "y": 300, "w": 317, "h": 199}):
                    client.post(f"/api/images/{image['id']}/boxes", json={**box, "label": name})
                ids["labels"].append(name)
                ids["images"].append(image["id"])
            yield client, ids
        get_settings.cache_clear()


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

    def counted(self: Store, image: Any) -> Any:
        counts["decodes"] += 1
        return real(self, image)

    monkeypatch.setattr(Store, "load_decoded", counted)

    def hook(*_: Any) -> None:
        counts["forwards"] += 1

    handle = model.module.conv_stem.register_forward_hook(hook)
    yield counts
    handle.remove()


def _cases(ids: dict[str, Any]) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    labels, image = ids["labels"], ids["images"][0]
    return [
        ("/api/distances",
         {"labels": labels, "layer": "conv_head", "measure": "mutual_information",
          "descriptor": "grid", "grid_size": 16, "options": {"bins": 256}},
         {"labels": labels, "layer": "conv_head", "measure": "euclidean"}),
        ("/api/distances",
         {"labels": labels, "layer": "conv_head", "measure": "mmd", "descriptor": "pixels",
          "grid_size": 16},
         {"labels": labels, "layer": "conv_head", "measure": "mmd", "descriptor": "pixels",
          "grid_size": 2}),
        ("/api/separation",
         {"labels": labels, "layers": LAYERS, "descriptor": "grid", "grid_size": 16},
         {"labels": labels, "layers": LAYERS}),
        ("/api/embeddings",
         {"labels": labels, "layer": "conv_head", "method": "tsne", "descriptor": "grid",
          "grid_size": 16},
         {"labels": labels, "layer": "conv_head", "method": "pca"}),
        ("/api/heatmaps", {"image_id": image, "layer": "conv_head", "method": "gradcam"},
         {"image_id": image, "layer": "conv_head", "method": "mean"}),
        ("/api/heatmaps/png", {"image_id": image, "layer": "bn2", "method": "layercam"},
         {"image_id": image, "layer": "bn2", "method": "l2"}),
        ("/api/predictions", {"image_id": image, "mode": "native"},
         {"image_id": image, "mode": "resize"}),
    ]


@pytest.mark.slow
@pytest.mark.parametrize("case", range(7))
def test_over_budget_is_413_before_any_work_and_under_budget_runs(
        project: tuple[TestClient, dict[str, Any]], work: dict[str, int], case: int) -> None:
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
        project: tuple[TestClient, dict[str, Any]]) -> None:
    client, _ = project
    values = np.random.default_rng(5).integers(0, 65536, (800, 1000), dtype=np.uint16)
    image = Image.fromarray(values)
    assert image.mode.startswith("I;16")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    answer = client.post("/api/images", files={"file": ("deep.png", buffer.getvalue(),
                                                         "image/png")})
    assert answer.status_code == 413, answer.text
    assert "FEATUREGAP_MAX_DECODED_BYTES" in answer.json()["detail"]
    small = Image.fromarray(values[:300, :400])  # 300×400×8 bytes: under the budget
    buffer = io.BytesIO()
    small.save(buffer, format="PNG")
    assert client.post("/api/images", files={"file": ("small.png", buffer.getvalue(),
                                                       "image/png")}).status_code == 201
