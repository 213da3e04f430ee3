"""Batch norms folded into convolutions: as precise as the model's own pass, the model left
alone, folded weights following the model's."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from torch import nn

from app.engine.cams.base import cam_map
from app.engine.fold import foldable_pairs
from app.engine.graph import traced
from app.engine.models import LoadedModel
from app.engine.preprocess import to_input

_NODES = ("blocks.3.0.conv_pw", "blocks.5.0.bn1", "bn2")


@pytest.fixture(scope="module")
def inputs(embedded_model: LoadedModel, photo: Any) -> torch.Tensor:
    names = ("chelsea", "coffee", "astronaut")
    return torch.stack([to_input(photo.decoded(n).pixels, embedded_model.spec) for n in names])


def test_folded_pass_is_as_close_to_float64_as_the_models_own(
    embedded_model: LoadedModel, inputs: torch.Tensor
) -> None:
    graph = traced(embedded_model.module)
    nodes = (*_NODES, graph.output)
    reference = traced(copy.deepcopy(embedded_model.module).double().eval()).extractor(nodes)
    with torch.inference_mode():
        exact = reference(inputs.double())
        plain = graph.extractor(nodes)(inputs)
        folded = graph.extractor(nodes, folded=True)(inputs)
    for node in nodes:
        plain_error = float((plain[node].double() - exact[node]).abs().max())
        folded_error = float((folded[node].double() - exact[node]).abs().max())
        scale = float(exact[node].abs().max())
        # float32 rounding either way (measured: bn2 2.1e-5 vs 2.7e-5 of a largest 6.0)
        assert folded_error <= 2 * plain_error + 1e-6 * scale, node
    assert bool((folded[graph.output].argmax(1) == exact[graph.output].argmax(1)).all())


def test_returned_convolutions_keep_their_own_output_and_the_model_its_modules(
    embedded_model: LoadedModel, inputs: torch.Tensor
) -> None:
    module = embedded_model.module
    graph = traced(module)
    pairs = foldable_pairs(graph.extractor(_NODES).graph_module)
    assert len(pairs) > 30  # nearly every conv → norm of EfficientNet-Lite0
    assert "blocks.3.0.conv_pw" not in {conv for conv, _ in pairs}  # returned: not folded
    assert ("blocks.3.0.conv_dw", "blocks.3.0.bn2") in pairs
    folded = graph.extractor(_NODES, folded=True)
    kinds = {name: type(m).__name__ for name, m in folded.graph_module.named_modules()}
    assert kinds["blocks.3.0.bn1"] == "BatchNormAct2d"  # after the returned conv_pw
    assert kinds["blocks.3.0.bn2"] == "Sequential"  # its dropout and activation
    calls = []
    hook = module.get_submodule("blocks.3.0.bn2").register_forward_hook(lambda *_: calls.append(1))
    try:
        with torch.inference_mode():
            out = folded(inputs[:1])
            assert not calls  # the folded pass does not call the model's norm
            module(inputs[:1])
            assert calls  # the model still does
    finally:
        hook.remove()
    assert type(module.get_submodule("blocks.3.0.bn2")).__name__ == "BatchNormAct2d"
    with torch.inference_mode():
        plain = graph.extractor(_NODES)(inputs[:1])
    torch.testing.assert_close(
        out["blocks.3.0.conv_pw"], plain["blocks.3.0.conv_pw"], rtol=1e-5, atol=1e-3
    )


def test_folded_weights_follow_the_models_weights(
    embedded_model: LoadedModel, inputs: torch.Tensor
) -> None:
    graph = traced(embedded_model.module)
    folded, plain = graph.extractor(("bn2",), folded=True), graph.extractor(("bn2",))
    norm = embedded_model.module.get_submodule("blocks.4.0.bn2")
    assert isinstance(norm, nn.BatchNorm2d) and norm.running_var is not None
    with torch.inference_mode():
        before = folded(inputs[:1])["bn2"]
    saved = norm.running_var.clone()
    try:
        with torch.no_grad():
            norm.running_var.mul_(4.0)  # in place, as load_state_dict and optimisers write
        with torch.inference_mode():
            after, want = folded(inputs[:1])["bn2"], plain(inputs[:1])["bn2"]
        assert float((after - before).abs().max()) > 0.1  # the change reached the folded pass
        torch.testing.assert_close(after, want, rtol=1e-4, atol=1e-4)
    finally:
        with torch.no_grad():
            norm.running_var.copy_(saved)


class _Standardised(nn.Conv2d):
    """A convolution subclass that changes its weight in forward (as StdConv2d does)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = (self.weight - self.weight.mean((1, 2, 3), keepdim=True)) * 2
        return self._conv_forward(x, w, self.bias)


def test_only_known_classes_fold_and_a_plain_pair_folds_exactly() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 5, 3, padding=1),
        nn.BatchNorm2d(5),
        nn.ReLU(),
        _Standardised(5, 4, 1),
        nn.BatchNorm2d(4),
        nn.Conv2d(4, 4, 1, bias=False),
        nn.BatchNorm2d(4, affine=False),
    ).double()
    for norm in (net[1], net[4], net[6]):
        norm.running_mean.uniform_(-1, 1)
        norm.running_var.uniform_(0.5, 2)
        if norm.affine:
            nn.init.uniform_(norm.weight, 0.5, 1.5)
            nn.init.uniform_(norm.bias, -1, 1)
    net.eval()
    graph = traced(net)
    assert foldable_pairs(graph.extractor((graph.output,)).graph_module) == [("0", "1"), ("5", "6")]
    folded = graph.extractor((graph.output,), folded=True)
    x = torch.randn(2, 3, 9, 7, dtype=torch.float64)
    with torch.inference_mode():
        torch.testing.assert_close(folded(x)[graph.output], net(x), rtol=1e-12, atol=1e-12)


def test_gradcam_at_a_folded_norm_equals_the_unfolded_models(
    embedded_model: LoadedModel, inputs: torch.Tensor
) -> None:
    # bn2 is a norm whose convolution (conv_head) is folded: the hook that starts the
    # gradient must sit on the trace's module there, not on the model's.
    module = embedded_model.module
    x = inputs[:1]
    ours, target = cam_map(module, x, "bn2", "gradcam")
    assert target is not None
    graph = traced(module)
    plain = graph.extractor(("bn2", graph.output))
    with torch.enable_grad():
        out = plain(x.clone().requires_grad_(True))
        (gradients,) = torch.autograd.grad(out[graph.output][0, target], out["bn2"])
    weights = gradients[0].mean(dim=(1, 2))
    want = torch.relu(torch.einsum("c,chw->hw", weights, out["bn2"][0].detach()))
    torch.testing.assert_close(ours, want, rtol=1e-3, atol=1e-4 * float(want.max()))
