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


def test_concurrent_traces_of_one_model_all_succeed() -> None:
    """Two requests asking for new layer sets at once must both get working extractors."""
    from concurrent.futures import ThreadPoolExecutor

    import timm

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    names = [n for n in node_names(model) if n.startswith("blocks.")][:24]
    x = torch.randn(1, 3, 64, 64)

    def run(i: int) -> torch.Size:
        with torch.inference_mode():
            return forward_nodes(model, x, [names[i], "classifier"])["classifier"].shape

    with ThreadPoolExecutor(max_workers=6) as pool:
        shapes = list(pool.map(run, range(len(names))))
    assert shapes == [torch.Size([1, 1000])] * len(names)


def test_each_model_is_traced_once_for_names_and_once_per_node_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from app.engine import graph

    calls = {"names": 0, "extractors": 0}
    names_of, extract_with = graph.get_graph_node_names, graph.create_feature_extractor

    def count_names(*args: object, **kwargs: object) -> object:
        calls["names"] += 1
        return names_of(*args, **kwargs)

    def count_extractors(*args: object, **kwargs: object) -> object:
        calls["extractors"] += 1
        return extract_with(*args, **kwargs)

    monkeypatch.setattr(graph, "get_graph_node_names", count_names)
    monkeypatch.setattr(graph, "create_feature_extractor", count_extractors)
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=4).eval()
    x = torch.randn(1, 3, 40, 48)
    with torch.inference_mode():
        first = forward_nodes(model, x, ["layer1.0.add", "fc"])
        again = forward_nodes(model, x, ["fc", "layer1.0.add"])  # same set, another order
        forward_nodes(model, x, ["layer2.1.add"])
    assert node_names(model)[-1] == output_node(model) == "fc"
    with pytest.raises(KeyError, match="unknown layer 'nope'"):
        extractor(model, ["nope"])
    assert calls == {"names": 1, "extractors": 2}
    torch.testing.assert_close(first["fc"], again["fc"], rtol=0, atol=0)
    other = torchvision.models.resnet18(num_classes=4).eval()  # another object: its own trace
    node_names(other)
    assert calls["names"] == 2
