"""Heat maps: channel reductions and the CAM family against independent references.

Tiny float64 networks are built here; the layer maps and gradients of the references come
from a hand-written forward (no fx, no hooks), the formulas from the papers in numpy.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from app.boxes import Box
from app.engine.cams import (
    METHODS,
    CamOptions,
    cam_layers,
    cam_map,
    reduce_channels,
)
from app.engine.cams.scorecam import scorecam_batch
from app.engine.graph import forward_nodes, traced
from app.engine.heatmaps import compute_heatmap, normalise
from app.engine.localisation import score_boxes
from app.engine.models import LoadedModel
from app.engine.preprocess import InputMode, to_input
from app.images import DecodedImage, decode_image
from tests.engine.scorecam_passes import masked_passes

SIZE = (13, 11)  # input H×W: odd on purpose


class TinyNet(nn.Module):
    """conv → in-place ReLU → strided conv → ReLU → global average pool → Linear."""

    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(6, 7, 3, stride=2, padding=1)
        self.act2 = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(7, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a2 = self.act2(self.conv2(self.act1(self.conv1(x))))
        return self.fc(self.flatten(self.pool(a2)))


class MlpHeadNet(TinyNet):
    """Same trunk, but the head is not one Linear: CAM does not apply."""

    def __init__(self) -> None:
        super().__init__(classes=7)
        self.out = nn.Linear(7, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(super().forward(x)))


@pytest.fixture
def net() -> TinyNet:
    torch.manual_seed(0)
    model = TinyNet().double().eval()
    with torch.no_grad():  # a positive bias keeps enough of the second ReLU alive
        model.conv2.bias.add_(0.3)
    return model


@pytest.fixture
def x() -> torch.Tensor:
    return torch.randn(1, 3, *SIZE, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


def _hand(net: TinyNet, x: torch.Tensor, layer: str, target: int) -> tuple[np.ndarray, np.ndarray]:
    """(A, ∂logit/∂A) at ``conv1`` (pre-ReLU) or ``act2``, from a hand-written forward."""
    c1 = F.conv2d(x, net.conv1.weight, net.conv1.bias, padding=1)
    c1.retain_grad()
    a2 = F.relu(F.conv2d(F.relu(c1), net.conv2.weight, net.conv2.bias, stride=2, padding=1))
    a2.retain_grad()
    logits = a2.mean(dim=(2, 3)) @ net.fc.weight.T + net.fc.bias
    logits[0, target].backward()
    fmap = {"conv1": c1, "act2": a2}[layer]
    assert fmap.grad is not None
    return fmap[0].detach().numpy(), fmap.grad[0].numpy()


def _top(net: nn.Module, x: torch.Tensor) -> int:
    with torch.no_grad():
        return int(net(x).argmax())


# --- channel reductions ----------------------------------------------------------------


def test_reductions_equal_numpy() -> None:
    rng = np.random.default_rng(3)
    fmap = rng.normal(size=(9, 5, 7))
    t = torch.from_numpy(fmap)
    np.testing.assert_allclose(reduce_channels(t, "mean").numpy(), fmap.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(
        reduce_channels(t, "l2").numpy(), np.sqrt((fmap**2).sum(axis=0)), rtol=1e-12
    )
    np.testing.assert_allclose(reduce_channels(t, "max").numpy(), fmap.max(axis=0), rtol=1e-12)
    np.testing.assert_array_equal(reduce_channels(t, "channel", 8).numpy(), fmap[8])


@pytest.mark.parametrize("channel", [None, -1, 9])
def test_channel_needs_a_valid_channel(channel: int | None) -> None:
    with pytest.raises(ValueError, match="channel between 0 and 8"):
        reduce_channels(torch.zeros(9, 2, 2), "channel", channel)


def test_reductions_through_the_model_match_the_hand_forward(net: TinyNet, x: torch.Tensor) -> None:
    fmap, _ = _hand(net, x, "act2", 0)
    mean, target = cam_map(net, x, "act2", "mean")
    assert target is None
    np.testing.assert_allclose(mean.numpy(), fmap.mean(axis=0), rtol=1e-12)
    chan, _ = cam_map(net, x, "act2", "channel", options=CamOptions(channel=4))
    np.testing.assert_allclose(chan.numpy(), fmap[4], rtol=1e-12)


# --- the CAM family ----------------------------------------------------------------------


@pytest.mark.parametrize("target", [None, 3])
def test_gradcam_equals_captum_and_the_formula(
    net: TinyNet, x: torch.Tensor, target: int | None
) -> None:
    from captum.attr import LayerGradCam

    ours, chosen = cam_map(net, x, "act2", "gradcam", target)
    assert chosen == (_top(net, x) if target is None else target)
    assert chosen is not None
    reference = LayerGradCam(net, net.act2).attribute(x, target=chosen, relu_attributions=True)
    reference_map = reference[0, 0].detach().numpy()
    np.testing.assert_allclose(ours.numpy(), reference_map, rtol=1e-10, atol=1e-12)

    fmap, grad = _hand(net, x, "act2", chosen)
    by_hand = np.maximum((grad.mean(axis=(1, 2))[:, None, None] * fmap).sum(axis=0), 0.0)
    np.testing.assert_allclose(ours.numpy(), by_hand, rtol=1e-10, atol=1e-12)
    assert by_hand.max() > 0  # the comparison is not between two zero maps


def test_gradients_are_recorded_from_the_layer_on_only(net: TinyNet, x: torch.Tensor) -> None:
    recorded: dict[str, bool] = {}
    hooks = [
        getattr(net, name).register_forward_hook(
            lambda _m, _i, _o, name=name: recorded.__setitem__(name, torch.is_grad_enabled())
        )
        for name in ("conv1", "conv2", "fc")
    ]
    try:
        with torch.no_grad():  # the caller's grad mode is no obstacle, and comes back
            ours, _ = cam_map(net, x, "act2", "gradcam", 3)
            assert not torch.is_grad_enabled()
    finally:
        for hook in hooks:
            hook.remove()
    assert recorded == {"conv1": False, "conv2": False, "fc": True}
    assert torch.is_grad_enabled() and not net.act2._forward_hooks
    fmap, grad = _hand(net, x, "act2", 3)
    by_hand = np.maximum((grad.mean(axis=(1, 2))[:, None, None] * fmap).sum(axis=0), 0.0)
    np.testing.assert_allclose(ours.numpy(), by_hand, rtol=1e-10, atol=1e-12)
    assert by_hand.max() > 0


def test_gradcam_on_a_layer_before_an_inplace_relu_sees_the_pre_relu_values(
    net: TinyNet, x: torch.Tensor
) -> None:
    # conv1 is followed by ReLU(inplace=True): without care the layer's output is overwritten
    fmap, grad = _hand(net, x, "conv1", 2)
    assert (fmap < 0).any()
    ours, _ = cam_map(net, x, "conv1", "gradcam", 2)
    by_hand = np.maximum((grad.mean(axis=(1, 2))[:, None, None] * fmap).sum(axis=0), 0.0)
    np.testing.assert_allclose(ours.numpy(), by_hand, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("layer", ["conv1", "act2"])
def test_layercam_equals_the_paper(net: TinyNet, x: torch.Tensor, layer: str) -> None:
    fmap, grad = _hand(net, x, layer, 1)
    ours, _ = cam_map(net, x, layer, "layercam", 1)
    by_hand = np.maximum((np.maximum(grad, 0.0) * fmap).sum(axis=0), 0.0)
    np.testing.assert_allclose(ours.numpy(), by_hand, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("layer", ["conv1", "act2"])
def test_gradcampp_equals_the_closed_form(net: TinyNet, x: torch.Tensor, layer: str) -> None:
    # Chattopadhay et al. eq. 19 with Y = exp(S), as pytorch-grad-cam writes it: the exp(S)
    # factor on ∂Y/∂A is dropped (one positive number for the whole map).
    fmap, grad = _hand(net, x, layer, 1)
    ours, _ = cam_map(net, x, layer, "gradcampp", 1)
    weights = np.zeros(fmap.shape[0])
    for c in range(fmap.shape[0]):
        total = fmap[c].sum()
        for i in range(fmap.shape[1]):
            for j in range(fmap.shape[2]):
                g = grad[c, i, j]
                if g == 0:
                    continue
                alpha = g**2 / (2 * g**2 + total * g**3)
                weights[c] += alpha * max(g, 0.0)
    by_hand = np.maximum(np.tensordot(weights, fmap, axes=1), 0.0)
    np.testing.assert_allclose(ours.numpy(), by_hand, rtol=1e-9, atol=1e-12)
    assert by_hand.max() > 0


def test_cam_is_the_weighted_sum_and_gradcam_up_to_relu_and_scale(
    net: TinyNet, x: torch.Tensor
) -> None:
    assert cam_layers(net) == ["act2"]
    cam, target = cam_map(net, x, "act2", "cam")
    assert target is not None
    fmap, _ = _hand(net, x, "act2", target)
    weight = net.fc.weight.detach().numpy()[target]
    np.testing.assert_allclose(cam.numpy(), np.tensordot(weight, fmap, axes=1), rtol=1e-12)
    # CAM keeps its sign: its mean plus the bias is the logit
    with torch.no_grad():
        logit = float(net(x)[0, target])
    bias = float(net.fc.bias.detach()[target])
    assert float(cam.mean()) + bias == pytest.approx(logit, rel=1e-12)
    gradcam, _ = cam_map(net, x, "act2", "gradcam", target)
    h, w = fmap.shape[1:]
    np.testing.assert_allclose(gradcam.numpy(), np.maximum(cam.numpy(), 0) / (h * w), rtol=1e-10)


def test_cam_refuses_other_layers_and_other_heads(net: TinyNet, x: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="use layer 'act2'"):
        cam_map(net, x, "conv2", "cam")
    torch.manual_seed(0)
    other = MlpHeadNet().double()
    assert cam_layers(other) == []
    with pytest.raises(ValueError, match="no such layer.*gradcam"):
        cam_map(other, x, "act2", "cam")
    cam_map(other, x, "act2", "gradcam")  # while Grad-CAM works there


def _naive_scorecam(
    net: nn.Module, x: torch.Tensor, fmap: np.ndarray, target: int, channels: list[int]
) -> np.ndarray:
    total = np.zeros(fmap.shape[1:])
    for c in channels:
        if fmap[c].max() == fmap[c].min():  # constant before upsampling adds a rounding spread
            continue
        mask = F.interpolate(
            torch.from_numpy(fmap[c])[None, None],
            size=x.shape[-2:],
            mode="bilinear",
            align_corners=False,
        )
        low, high = float(mask.min()), float(mask.max())
        if high == low:
            continue
        with torch.no_grad():
            prob = torch.softmax(net(x * (mask - low) / (high - low)), dim=1)[0, target]
        total += float(prob) * fmap[c]
    return np.maximum(total, 0.0)


@pytest.mark.parametrize(
    ("cap", "batch", "constant"), [(64, 3, False), (3, 2, False), (64, 4, True)]
)
def test_scorecam_equals_a_naive_loop(
    net: TinyNet, x: torch.Tensor, cap: int, batch: int, constant: bool
) -> None:
    if constant:  # channel 0 becomes a constant 2.0: it masks nothing and gets no weight
        with torch.no_grad():
            net.conv2.weight[0] = 0.0
            net.conv2.bias[0] = 2.0
    fmap, _ = _hand(net, x, "act2", 0)
    assert (fmap[0] == 2.0).all() == constant
    options = CamOptions(max_channels=cap, batch_size=batch)
    ours, target = cam_map(net, x, "act2", "scorecam", options=options)
    assert target == _top(net, x)
    order = list(np.argsort(-fmap.mean(axis=(1, 2)), kind="stable")[:cap])
    by_hand = _naive_scorecam(net, x, fmap, target, [int(c) for c in order])
    np.testing.assert_allclose(ours.numpy(), by_hand, rtol=1e-10, atol=1e-12)
    assert by_hand.max() > 0


@pytest.mark.parametrize(
    ("pixels", "batch"),
    [(SIZE[0] * SIZE[1], 1), (3 * SIZE[0] * SIZE[1] - 1, 2), (1, 1), (10**9, 5)],
)
def test_scorecam_batches_within_the_pixel_budget_give_the_same_numbers(
    net: TinyNet, x: torch.Tensor, pixels: int, batch: int
) -> None:
    assert scorecam_batch(SIZE[0], SIZE[1], 5, pixels) == batch
    fmap, _ = _hand(net, x, "act2", 0)
    target = _top(net, x)
    order = list(np.argsort(-fmap.mean(axis=(1, 2)), kind="stable"))
    by_hand = _naive_scorecam(net, x, fmap, target, [int(c) for c in order])
    options = CamOptions(max_channels=64, batch_size=5, max_batch_pixels=pixels)
    with masked_passes(net) as sizes:
        ours, _ = cam_map(net, x, "act2", "scorecam", options=options)
    np.testing.assert_allclose(ours.numpy(), by_hand, rtol=1e-10, atol=1e-12)
    assert max(sizes) == batch and sum(sizes) == 7  # the layer has 7 channels


def test_scorecam_forwards_no_constant_mask_and_fills_whole_batches(
    net: TinyNet, x: torch.Tensor
) -> None:
    with torch.no_grad():  # channels 1 (all 0, a dead ReLU) and 4 (all 2.0) are constant
        net.conv2.weight[[1, 4]] = 0.0
        net.conv2.bias[1], net.conv2.bias[4] = -1.0, 2.0
    fmap, _ = _hand(net, x, "act2", 0)
    target = _top(net, x)
    order = [int(c) for c in np.argsort(-fmap.mean(axis=(1, 2)), kind="stable")]
    by_hand = _naive_scorecam(net, x, fmap, target, order)
    with masked_passes(net) as sizes:
        ours, _ = cam_map(net, x, "act2", "scorecam", options=CamOptions(batch_size=2))
    np.testing.assert_allclose(ours.numpy(), by_hand, rtol=1e-10, atol=1e-12)
    assert sizes == [2, 2, 1]  # 5 live channels of 7, in full batches
    assert by_hand.max() > 0


def test_scorecam_stops_between_batches_when_cancelled(net: TinyNet, x: torch.Tensor) -> None:
    asked: list[int] = []

    def cancelled() -> bool:
        asked.append(1)
        return len(asked) == 3

    options = CamOptions(batch_size=2)
    with pytest.raises(InterruptedError, match="cancelled"):
        cam_map(net, x, "act2", "scorecam", options=options, cancelled=cancelled)
    assert len(asked) == 3 and not net.training  # state restored
    asked.clear()
    done, _ = cam_map(net, x, "act2", "scorecam", options=options, cancelled=lambda: False)
    plain, _ = cam_map(net, x, "act2", "scorecam", options=options)
    torch.testing.assert_close(done, plain, rtol=0, atol=0)
    with pytest.raises(ValueError, match="max_batch_pixels must be at least 1"):
        CamOptions(max_batch_pixels=0)
    with pytest.raises(ValueError, match="max_channels must be at least 1"):
        CamOptions(max_channels=0)


def test_cams_and_extraction_share_one_trace_and_keep_layers_out_of_place(
    net: TinyNet, x: torch.Tensor
) -> None:
    """Whoever switches ReLU(inplace=True) back on, the shared extractor must not use it."""
    ours, _ = cam_map(net, x, "conv1", "gradcam", 2)  # traces the (conv1, fc) extractor
    net.act1.inplace = True  # the model's owner
    graph = traced(net)
    assert traced(net) is graph and graph.output == "fc"
    with torch.no_grad():
        nodes = forward_nodes(net, x, ["conv1", "fc"])  # the extractor the CAM call traced
    assert graph.extractor(["conv1", "fc"]) is graph.extractor(("conv1", "fc", "conv1"))
    fmap, _ = _hand(net, x, "conv1", 2)
    np.testing.assert_allclose(nodes["conv1"][0].numpy(), fmap, rtol=1e-12, atol=1e-12)
    assert (nodes["conv1"] < 0).any()  # an in-place ReLU would have eaten these
    assert ours.shape == fmap.shape[1:]


def test_a_heat_map_ending_during_an_extraction_pass_leaves_its_layers_out_of_place(
    net: TinyNet, x: torch.Tensor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A heat map whose call ends while another thread's extraction pass is between
    ``conv1`` and its in-place ReLU: the pass must still return ``conv1``'s negatives."""
    cam_map(net, x, "act2", "mean")  # its extractor traced now, not mid-pass
    net.act1.inplace = True  # as the model was built
    in_compute, pass_between = threading.Event(), threading.Event()
    compute = METHODS["mean"].compute

    def held_compute(self: Any, run: Any) -> torch.Tensor:
        in_compute.set()
        assert pass_between.wait(30)
        return compute(self, run)

    monkeypatch.setattr(METHODS["mean"], "compute", held_compute)
    with ThreadPoolExecutor(1) as pool:
        heat = pool.submit(cam_map, net, x, "act2", "mean")
        assert in_compute.wait(30)

        def end_heat_map(*_: object) -> None:  # after conv1, before its ReLU
            if not pass_between.is_set():
                pass_between.set()
                heat.result(30)

        hook = net.conv1.register_forward_hook(end_heat_map)
        try:
            with torch.no_grad():
                nodes = forward_nodes(net, x, ["conv1", "act2"])
        finally:
            hook.remove()
    fmap, _ = _hand(net, x, "conv1", 2)
    np.testing.assert_allclose(nodes["conv1"][0].numpy(), fmap, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_gives_a_finite_map_at_layer_resolution(
    net: TinyNet, x: torch.Tensor, method: str
) -> None:
    result, target = cam_map(net, x, "act2", method, options=CamOptions(channel=0))
    assert result.shape == (7, 6)
    assert torch.isfinite(result).all()
    assert (target is None) == (not METHODS[method].needs_target)


# --- errors and state --------------------------------------------------------------------


def test_bad_requests_say_how_to_fix_them(net: TinyNet, x: torch.Tensor) -> None:
    with pytest.raises(KeyError, match="unknown layer 'nope'; use one of x, conv1"):
        cam_map(net, x, "nope", "gradcam")
    with pytest.raises(KeyError, match="unknown heat-map method 'gradcam2'.*scorecam"):
        cam_map(net, x, "act2", "gradcam2")
    with pytest.raises(ValueError, match="not a 1×C×h×w feature map"):
        cam_map(net, x, "fc", "gradcam")
    with pytest.raises(ValueError, match="target 5 is out of range; the model has 5 classes"):
        cam_map(net, x, "act2", "gradcam", 5)
    with pytest.raises(ValueError, match="1×3×H×W"):
        cam_map(net, x[0], "act2", "gradcam")


def test_registry_refuses_duplicate_names() -> None:
    with pytest.raises(ValueError, match="already registered"):
        METHODS.register("gradcam")(METHODS["scorecam"])
    assert METHODS["scorecam"].name == "scorecam" and METHODS["gradcam"].name == "gradcam"


@pytest.fixture
def trained_state(net: TinyNet) -> Iterator[TinyNet]:
    """The net in train mode with mixed flags, to check everything comes back as it was."""
    net.train()
    net.pool.eval()
    net.conv1.weight.requires_grad_(False)
    yield net


def _state(net: nn.Module) -> tuple[list[bool], list[bool]]:
    return [m.training for m in net.modules()], [p.requires_grad for p in net.parameters()]


@pytest.mark.parametrize("method", ["gradcam", "scorecam", "mean"])
def test_mode_flags_are_restored_when_a_call_raises(
    trained_state: TinyNet, x: torch.Tensor, method: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = _state(trained_state)
    assert before[0][:3] == [True, True, True]

    def boom(self: object, run: object) -> torch.Tensor:
        # mid-call: the forward pass ran, the model is in its temporary state
        assert not trained_state.training
        assert not any(p.requires_grad for p in trained_state.parameters())
        raise RuntimeError("boom")

    monkeypatch.setattr(METHODS[method], "compute", boom)
    with pytest.raises(RuntimeError, match="boom"):
        cam_map(trained_state, x, "act2", method)
    assert _state(trained_state) == before
    with pytest.raises(ValueError, match="out of range"):
        cam_map(trained_state, x, "act2", "gradcam", 99)
    assert _state(trained_state) == before


# --- display normalisation -----------------------------------------------------------------


def test_normalise_equals_numpy() -> None:
    rng = np.random.default_rng(5)
    raw = rng.normal(size=(23, 17)) * 3 + 1
    values = torch.from_numpy(raw)
    np.testing.assert_array_equal(normalise(values, "none").numpy(), raw)
    minmax = (raw - raw.min()) / (raw.max() - raw.min())
    np.testing.assert_allclose(normalise(values, "minmax").numpy(), minmax, rtol=1e-12)
    scale = np.percentile(np.abs(raw), 95)
    np.testing.assert_allclose(
        normalise(values, "percentile", 95).numpy(), np.clip(raw / scale, -1, 1), rtol=1e-12
    )
    assert float(values[0, 0]) == raw[0, 0]  # the raw map is untouched
    flat = torch.full((4, 5), 2.0)
    assert not normalise(flat, "minmax").any()
    assert not normalise(torch.zeros(4, 5), "percentile").any()
    with pytest.raises(ValueError, match="use none, minmax or percentile"):
        normalise(values, "zscore")  # type: ignore[arg-type]


def test_minmax_gives_torch_arithmetic_to_the_bit_in_float32_and_on_strided_maps() -> None:
    generator = torch.Generator().manual_seed(6)
    raw = torch.randn(301, 451, generator=generator) * 3.7 + 1.1
    for values in (raw, raw.t(), raw[::3, 1::2]):
        low, high = values.min(), values.max()
        out = normalise(values, "minmax")
        assert out.dtype == torch.float32 and torch.equal(out, (values - low) / (high - low))
    needs_grad = raw[:5, :7].clone().requires_grad_(True)
    assert normalise(needs_grad, "minmax").requires_grad  # such maps keep torch's path


# --- the real embedded model on a real photo ------------------------------------------------


@pytest.fixture(scope="module")
def lite0() -> LoadedModel:
    from app.engine.models import get_model

    return get_model("efficientnet_lite0")


@pytest.fixture(scope="module")
def chelsea(photo: Any) -> DecodedImage:
    return decode_image(photo.png("chelsea"), max_pixels=10**7)


@pytest.mark.slow
def test_gradcam_of_the_cat_class_sits_on_the_cats_face(
    lite0: LoadedModel, chelsea: DecodedImage
) -> None:
    heat = compute_heatmap(lite0, chelsea, "bn2", "gradcam", target=285)
    assert heat.values.shape == (300, 451) and heat.values.dtype == torch.float32
    assert (heat.method, heat.target, heat.layer) == ("gradcam", 285, "bn2")
    assert heat.target_label == lite0.spec.class_names[285]
    assert cam_layers(lite0.module) == ["bn2"]  # timm's bn2 includes the activation
    face = Box(140, 20, 180, 210)  # the cat's face, x 140–320, y 20–230
    inside = heat.values[20:230, 140:320]
    assert float(inside.mean()) > 1.3 * float(heat.values.mean())
    (scores,) = score_boxes(heat.values, [face])
    assert scores["energy"] > (180 * 210) / (451 * 300) + 0.1
    assert scores["auc"] > 0.7


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["resize", "native"])
def test_compute_heatmap_brings_the_layer_map_to_the_image_grid(
    lite0: LoadedModel, chelsea: DecodedImage, mode: InputMode
) -> None:
    layer = "blocks.5.0.conv_pw"
    heat = compute_heatmap(lite0, chelsea, layer, "mean", mode=mode)
    assert heat.target is None and heat.target_label is None
    x = to_input(chelsea.pixels, lite0.spec, mode=mode, max_stride=lite0.max_stride)[None]
    with torch.inference_mode():
        # the heat map's pass: batch norms folded (app.engine.fold)
        fmap = traced(lite0.module).extractor([layer], folded=True)(x)[layer]
    expected = F.interpolate(
        fmap.mean(dim=1, keepdim=True), size=(300, 451), mode="bilinear", align_corners=False
    )[0, 0]
    torch.testing.assert_close(heat.values, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_compute_heatmap_errors_name_the_fix(lite0: LoadedModel, chelsea: DecodedImage) -> None:
    with pytest.raises(KeyError, match="unknown layer 'bn3'; use one of"):
        compute_heatmap(lite0, chelsea, "bn3", "gradcam")
    with pytest.raises(ValueError, match="target 1000 is out of range; the model has 1000"):
        compute_heatmap(lite0, chelsea, "bn2", "gradcam", target=1000)
    with pytest.raises(ValueError, match="use layer 'bn2'"):
        compute_heatmap(lite0, chelsea, "conv_head", "cam")
    with pytest.raises(ValueError, match="channel between 0 and 1279"):
        compute_heatmap(lite0, chelsea, "bn2", "channel", channel=1280)
    assert not lite0.module.training
