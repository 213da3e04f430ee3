"""Nulls built from real boxes: ``gap`` descriptors of random boxes on a real photo, and how
often each measure's default bootstrap interval covers the null's value on random splits of
them (``python -m benchmarks.real_boxes [splits] [resamples] [measure ...]``, a measure
given as ``name`` or ``name:option=value,...``, e.g. ``mmd:estimator=unbiased``; the slow
test ``tests/engine/inference/test_bootstrap_real_boxes.py`` checks the measures that give
one).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import Any

import torch
from scipy.stats import binomtest

from app.boxes import Box
from app.engine.features import extract
from app.engine.inference import Design, bootstrap_interval
from app.engine.measures import MEASURES, Measure, get_measure
from app.engine.regions import region_descriptors
from app.images import DecodedImage


def box_rows(
    model: Any, image: DecodedImage, count: int, g: torch.Generator, layer: str = "conv_head"
) -> torch.Tensor:
    """``count×C`` rows: ``gap`` at ``layer`` of random boxes (sides 40–160 px) of one
    photo, placed with draws from ``g``."""
    fmap = extract(model, [image], [layer])[0][layer]
    sizes = 40 + torch.rand(count, 2, generator=g) * 120
    room = torch.tensor([image.width, image.height]) - sizes
    corners = torch.rand(count, 2, generator=g) * room
    boxes = [
        Box(float(x), float(y), float(w), float(h))
        for (x, y), (w, h) in zip(corners, sizes, strict=True)
    ]
    return torch.stack(region_descriptors(fmap, (image.width, image.height), boxes, "gap"))


def default_interval(
    measure: Measure, x: torch.Tensor, y: torch.Tensor, resamples: int, seed: int
) -> tuple[float, float]:
    """The measure's own 95% interval (method, scale, plug-in), one box per unit."""
    low, high, *_ = bootstrap_interval(
        measure,
        x,
        y,
        Design.independent(len(x), len(y)),
        resamples=resamples,
        seed=seed,
        method=measure.interval_method,
        plug_in=measure.plug_in,
        scale=measure.interval_scale,
    )
    return low, high


def measure_from(spec: str) -> Measure:
    """A measure from ``name`` or ``name:option=value,...`` (values as the API takes them)."""
    name, _, given = spec.partition(":")
    return get_measure(name, **dict(part.split("=", 1) for part in given.split(",") if part))


def print_null_coverage(
    model: Any, image: DecodedImage, specs: Sequence[str], splits: int = 100, resamples: int = 200
) -> None:
    """Per measure: how often its default interval covered the null's value (the measure
    with all 160 boxes as the population on both sides, :meth:`Measure.plug_in`) over
    random 40/40 splits, with a Wilson interval. The intervals are computed also for
    measures that refuse them in the app."""
    g = torch.Generator().manual_seed(3)
    rows = box_rows(model, image, 160, g).double()
    print("| measure | null's value | covered | 95% CI (Wilson) | low ≤ 0 | s |")
    print("| --- | --- | --- | --- | --- | --- |")
    for spec in specs:
        measure = measure_from(spec)
        truth = measure.plug_in(rows, rows)  # all boxes as the population (a U-statistic's
        # own value on them is not its population value: unbiased MMD² gives −0.007)
        covered = at_zero = 0
        start = time.perf_counter()
        for split in range(splits):
            order = torch.randperm(160, generator=g)
            low, high = default_interval(
                measure, rows[order[:40]], rows[order[40:80]], resamples, split
            )
            covered += low <= truth <= high
            at_zero += low <= 0
        ci = binomtest(covered, splits).proportion_ci(method="wilson")
        print(
            f"| {spec} | {truth:.4g} | {covered}/{splits} | [{ci.low:.3f}, {ci.high:.3f}] | "
            f"{at_zero} | {time.perf_counter() - start:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    from app.engine.models import get_model
    from benchmarks.calibration import _decoded, _texture

    counts = [int(a) for a in sys.argv[1:3]]  # splits, resamples
    specs = sys.argv[3:] or list(MEASURES)
    grass = _decoded(_texture("grass"))
    print_null_coverage(get_model("efficientnet_lite0"), grass, specs, *counts)
