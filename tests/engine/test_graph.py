"""Graph extraction returns each node's own output, even when later ops work in place."""

from __future__ import annotations

import pytest
import torch
import torchvision

from app.engine.graph import extractor, forward_nodes, node_names, output_node


def test_nodes_returned_together_equal_nodes_returned_alone() -> None:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=5).eval()
    x = torch.randn(2, 3, 64, 80)
    wanted = ["layer1.0.bn2", "layer1.0.add", "layer2.1.add", "fc"]
    with torch.inference_mode():
        together = forward_nodes(model, x, wanted)
        for name in wanted:
            alone = forward_nodes(model, x, [name])[name]
            torch.testing.assert_close(together[name], alone, rtol=0, atol=0)
    # The residual sum really has negatives: an in-place ReLU would have eaten them.
    assert bool((together["layer1.0.add"] < 0).any())


def test_unknown_layer_lists_valid_ones() -> None:
    model = torchvision.models.resnet18(num_classes=3).eval()
    with pytest.raises(KeyError, match="use one of x, conv1"):
        extractor(model, ["layer9"])
    assert output_node(model) == "fc"
    assert node_names(model)[0] == "x"
