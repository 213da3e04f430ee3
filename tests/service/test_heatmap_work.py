"""A heat map's work units: its forward passes' multiply-adds over 2**24, the multiply-adds
counted from the model's layers and checked against torch's own FlopCounterMode."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from app.engine.models import LoadedModel
from app.service.budgets import FLOPS_PER_UNIT, ModelCost, estimate_heatmap, heatmap_passes
from app.service.estimates import model_cost


def test_multiply_adds_per_pixel_match_torchs_flop_counter(embedded_model: LoadedModel) -> None:
    size = embedded_model.spec.input_size
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        embedded_model.module(torch.zeros(1, 3, size, size))
    macs = counter.get_total_flops() // 2  # it counts a multiply-add as two flops
    assert model_cost(embedded_model).macs_per_pixel * size * size == pytest.approx(macs, rel=1e-12)


@pytest.mark.parametrize(
    ("method", "channels", "max_channels", "passes"),
    [
        ("scorecam", 1280, 512, 514),  # 512 masked inputs, its own pass, the prediction's
        ("scorecam", 1280, 64, 66),
        ("scorecam", 7, 64, 9),  # a layer with fewer channels than asked
        ("gradcam", 1280, 64, 4),  # forward + backward (≈ 2 forwards) + prediction
        ("mean", 1280, 64, 2),
    ],
)
def test_units_are_passes_times_multiply_adds(
    method: str, channels: int, max_channels: int, passes: int
) -> None:
    assert heatmap_passes(method, channels, max_channels) == passes
    cost = ModelCost(400.0, 1800.0, 224, macs_per_pixel=7000.5)
    for mode, width, height, pixels in (
        ("resize", 3000, 1999, 224 * 224),
        ("native", 3001, 1999, 2048 * 1364),  # scaled to 2048 on its longer side
    ):
        estimate = estimate_heatmap(
            cost=cost,
            method=method,
            width=width,
            height=height,
            mode=mode,
            native_max_side=2048,
            channels=channels,
            max_channels=max_channels,
        )
        exact = passes * pixels * 7000.5 / FLOPS_PER_UNIT
        assert estimate.units == -int(-exact // 1) and estimate.units - 1 < exact
