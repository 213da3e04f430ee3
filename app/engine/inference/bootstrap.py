"""Percentile bootstrap intervals that resample whole units within each group."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from app.engine.inference.permutation import Statistic
from app.engine.inference.units import Design, Unit, choose_unit

__all__ = ["Interval", "bootstrap_interval", "unit_rows"]


class Interval(NamedTuple):
    """A percentile interval and the resamples it rests on."""

    low: float
    high: float
    resamples: int


def unit_rows(boxes: Sequence[Hashable], images: Sequence[Hashable], unit: Unit) -> list[Tensor]:
    """Row indices of each unit of one side (an image's boxes in this group, or one box),
    in order of first appearance."""
    keys = images if unit == "image" else boxes
    groups: dict[Hashable, list[int]] = {}
    for row, key in enumerate(keys):
        groups.setdefault(key, []).append(row)
    return [torch.tensor(r, dtype=torch.long) for r in groups.values()]


def _resample(rows: list[Tensor], g: torch.Generator) -> Tensor:
    pick = torch.randint(len(rows), (len(rows),), generator=g).tolist()
    return torch.cat([rows[i] for i in pick])


def bootstrap_interval(
    statistic: Statistic,
    x: Tensor,
    y: Tensor,
    design: Design,
    *,
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    unit: Unit | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> Interval:
    """Percentile interval of ``statistic(x, y)`` from a bootstrap over units.

    Each resample draws, within each group separately, as many units as the group has,
    with replacement (a unit is the rows of one image within that group, or of one box;
    see :func:`app.engine.inference.units.choose_unit`), and recomputes the statistic on
    the rows of the drawn units. The interval holds the ``(1 ± level)/2`` quantiles of the
    resampled values (linear interpolation). Resamples on which the statistic raises
    ``ValueError`` (e.g. a Grassmann subspace that collapses when one unit is drawn every
    time) are skipped and not counted.

    Args:
        statistic: any ``f(x, y) -> float``.
        x: ``n×d`` rows of the first group.
        y: ``m×d`` rows of the second group.
        design: box and image of every row.
        resamples: number of bootstrap resamples (≥ 1).
        seed: seed of the resampling.
        level: coverage of the interval, in ``(0, 1)``.
        unit: force ``"box"`` or ``"image"``; ``None`` chooses.
        cancelled: polled before every resample.

    Returns:
        ``(low, high, resamples used)``.

    Raises:
        ValueError: bad arguments, a design that does not match the rows, or no resample
            on which the statistic could be computed.
        InterruptedError: ``cancelled()`` turned true.
    """
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    x, y = design.samples(x, y)
    chosen = choose_unit(design, unit)
    ux = unit_rows(design.x_boxes, design.x_images, chosen)
    uy = unit_rows(design.y_boxes, design.y_images, chosen)
    g = torch.Generator().manual_seed(seed)
    values: list[float] = []
    for _ in range(resamples):
        if cancelled is not None and cancelled():
            raise InterruptedError("cancelled")
        rx, ry = _resample(ux, g), _resample(uy, g)
        try:
            values.append(float(statistic(x[rx.to(x.device)], y[ry.to(y.device)])))
        except ValueError:
            continue
    if not values:
        raise ValueError("the statistic failed on every bootstrap resample; add units")
    v = torch.tensor(values, dtype=torch.float64)
    q = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)
    low, high = torch.quantile(v, q).tolist()
    return Interval(low=low, high=high, resamples=len(values))
