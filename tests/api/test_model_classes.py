"""GET /api/models/{model}/classes: the names a heat map's target is picked by."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient


@pytest.mark.slow  # loads the embedded model
def test_classes_of_the_embedded_model_are_imagenet_in_output_order(client: TestClient) -> None:
    from torchvision.models import ResNet18_Weights

    classes = client.get("/api/models/efficientnet_lite0/classes").json()
    want = ResNet18_Weights.IMAGENET1K_V1.meta["categories"]
    assert [c["index"] for c in classes] == list(range(1000))
    assert [c["name"] for c in classes] == want
    assert classes[285] == {"index": 285, "name": "Egyptian cat"}
    assert classes[967]["name"] == "espresso"


def test_classes_of_an_unknown_model_are_a_404_naming_the_known(client: TestClient) -> None:
    unknown = client.get("/api/models/nope/classes")
    assert unknown.status_code == 404 and "efficientnet_lite0" in unknown.json()["detail"]
