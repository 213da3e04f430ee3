"""Layers: every 4-D feature-map node with its shape at the model's input size."""

from __future__ import annotations

import pytest
import torch
import torchvision

from app.engine.graph import forward_nodes
from app.engine.layers import check_layer, list_layers
from app.engine.models import LoadedModel, ModelSpec, get_model


@pytest.mark.slow
def test_embedded_model_layers() -> None:
    model = get_model("efficientnet_lite0")
    layers = list_layers(model)
    by_name = {info.name: info for info in layers}
    assert (by_name["conv_stem"].channels, by_name["conv_stem"].height) == (32, 112)
    bn2 = by_name["bn2"]
    assert (bn2.channels, bn2.height, bn2.width) == (1280, 7, 7)
    assert "classifier" not in by_name and "x" not in by_name
    assert list_layers(model) == layers
    with pytest.raises(KeyError, match="use one of conv_stem"):
        check_layer(model, "blocks.99")


def test_tiny_torchvision_model_layers_match_a_forward_pass() -> None:
    torch.manual_seed(0)
    module = torchvision.models.resnet18(num_classes=3).eval()
    spec = ModelSpec(
        "tiny-layers",
        "resnet18",
        "torchvision",
        64,
        (0.5,) * 3,
        (0.5,) * 3,
        ("a", "b", "c"),
        None,
        "",
    )
    model = LoadedModel(spec, module, "0" * 64, 32)
    layers = list_layers(model)
    names = [info.name for info in layers]
    assert names[0] == "conv1" and "layer4.1.relu_1" in names and "fc" not in names
    outputs = forward_nodes(module, torch.zeros(1, 3, 64, 64), names)
    for info in layers:
        assert tuple(outputs[info.name].shape) == (1, info.channels, info.height, info.width)
    assert check_layer(model, "layer4.1.relu_1").channels == 512
