"""Progress and cancel inside one heat-map call: Score-CAM says ``batch k of K`` before each
batch of masked inputs and stops between batches; the gradient family says its passes."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from app.engine.cams import CamOptions, cam_map
from tests.engine.scorecam_passes import masked_passes

SIZE = (9, 14)  # input H×W: awkward on purpose


class _Net(nn.Module):
    """conv → ReLU (7 channels at half size) → global average pool → Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 7, 3, stride=2, padding=1)
        self.act = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(7, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.act(self.conv(x))).flatten(1))


@pytest.fixture
def net() -> nn.Module:
    torch.manual_seed(3)
    model = _Net().double().eval()
    with torch.no_grad():  # every channel stays alive (none constant): 7 masked inputs
        model.conv.bias.fill_(0.5)
    return model


@pytest.fixture
def x() -> torch.Tensor:
    return torch.randn(1, 3, *SIZE, generator=torch.Generator().manual_seed(4), dtype=torch.float64)


def test_scorecam_reports_every_batch_in_order_and_the_map_is_unchanged(
    net: nn.Module, x: torch.Tensor
) -> None:
    plain, _ = cam_map(net, x, "act", "scorecam", options=CamOptions(batch_size=3))
    told: list[tuple[float, str]] = []
    with masked_passes(net) as sizes:
        ours, _ = cam_map(
            net,
            x,
            "act",
            "scorecam",
            options=CamOptions(batch_size=3),
            progress=lambda f, m: told.append((f, m)),
        )
    torch.testing.assert_close(ours, plain, rtol=0, atol=0)
    assert sizes == [3, 3, 1]  # 7 channels in batches of 3: K = 3
    batches = [m for _, m in told if "batch" in m]
    assert batches == ["Score-CAM batch 1 of 3", "Score-CAM batch 2 of 3", "Score-CAM batch 3 of 3"]
    assert told[0] == (0.0, "forward pass") and told[-1] == (1.0, "scorecam map done")
    fractions = [f for f, m in told if "batch" in m]
    # batch k of K starts at 0.02 + 0.98·(k−1)/K of the call
    for k, fraction in enumerate(fractions):
        assert math.isclose(fraction, 0.02 + 0.98 * k / 3, rel_tol=1e-12)
    every = [f for f, _ in told]
    assert every == sorted(every) and every[-1] == 1.0


def test_scorecam_cancelled_mid_call_runs_no_further_batch(net: nn.Module, x: torch.Tensor) -> None:
    stop = [False]

    def progress(_fraction: float, message: str) -> None:
        if message.startswith("Score-CAM batch 3 "):  # cancel while batch 3 of 7 runs
            stop[0] = True

    with masked_passes(net) as sizes, pytest.raises(InterruptedError, match="cancelled"):
        cam_map(
            net,
            x,
            "act",
            "scorecam",
            options=CamOptions(batch_size=1),
            progress=progress,
            cancelled=lambda: stop[0],
        )
    assert sizes == [1, 1, 1]  # batches 1–3 ran; 4–7 never did
    assert not net.training and all(p.requires_grad for p in net.parameters())  # restored


def test_gradcam_says_its_passes(net: nn.Module, x: torch.Tensor) -> None:
    told: list[tuple[float, str]] = []
    cam_map(net, x, "act", "gradcam", progress=lambda f, m: told.append((f, m)))
    assert told == [
        (0.0, "forward and backward pass"),
        (0.9, "gradcam map"),
        (1.0, "gradcam map done"),
    ]
    told.clear()
    cam_map(net, x, "act", "mean", progress=lambda f, m: told.append((f, m)))
    assert [m for _, m in told] == ["forward pass", "mean map", "mean map done"]
