"""The bias-corrected squared distance between group means: the scale of the Euclidean
measures' intervals.

``‖x̄−ȳ‖`` is biased upwards by about ``√(tr Σx/n + tr Σy/m)``: in many dimensions, with a
true gap of 0, it sits far from 0 and a bootstrap interval around it excludes 0 (a
studentized one did in 74% of simulated pairs in 16 dimensions). ``D̂² = ‖x̄−ȳ‖² − V̂x − V̂y``,
with ``V̂`` the unit-level estimate of ``E‖x̄ − μx‖²`` (the trace of the covariance of the
units' means over the number of units when units have equal rows), is unbiased for
``‖μx−μy‖²``; its studentized interval, mapped back by ``√max(0, ·)``, is one for the
distance between the population means, and a lower end ``≤ 0`` becomes 0.

With unequal rows per unit a group's mean is a ratio ``Σ sᵢ / Σ rᵢ`` (``sᵢ``: a unit's row
sum, ``rᵢ``: its rows), and ``V̂ = Σ ‖sᵢ − rᵢ x̄‖² / (r̄² n (n−1))`` is its linearised
(ratio-estimator) variance, which reduces to the above when every ``rᵢ`` is equal.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor

from app.engine.measures.base import IntervalScale

__all__ = ["SquaredGap"]


class SquaredGap(IntervalScale):
    """``D̂²`` on the raw features, or (``standardise``) on features divided by their pooled
    standard deviation over the rows (``std_euclidean``'s, taken again on each resample).

    A unit's summary row is ``[rows, Σ rows, Σ rows²]`` (the squares only when
    standardising), after subtracting the pooled mean of all rows (which changes no
    distance or variance and keeps the sums of squares free of cancellation).
    """

    note: ClassVar[str] = (
        "the interval is for the distance between the groups' population means: the value "
        "shown, ‖x̄−ȳ‖ of the samples, is biased upwards by about √(tr Σx/n + tr Σy/m), so "
        "the interval is built on the bias-corrected ‖x̄−ȳ‖² − s²x/n − s²y/m (s²: the trace "
        "of the covariance of the units' means) and mapped back by √max(0, ·); it can lie "
        "below the value shown"
    )

    def __init__(self, *, standardise: bool = False) -> None:
        self.standardise = standardise

    def summarise(
        self, x: Tensor, y: Tensor, x_units: Sequence[Tensor], y_units: Sequence[Tensor]
    ) -> tuple[Tensor, Tensor]:
        x, y = x.to(torch.float64), y.to(torch.float64)
        centre = torch.cat([x, y]).mean(0)

        def side(rows: Tensor, units: Sequence[Tensor]) -> Tensor:
            rows = rows - centre
            parts = []
            for u in units:
                r = rows[u.to(rows.device)]
                sums = [r.sum(0)] + ([r.square().sum(0)] if self.standardise else [])
                parts.append(torch.cat([r.new_tensor([len(u)]), *sums]))
            return torch.stack(parts)

        return side(x, x_units), side(y, y_units)

    def _sides(self, a: Tensor, b: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Per feature: the difference of the means, and each side's ``V̂``."""
        d = (a.shape[1] - 1) // (2 if self.standardise else 1)
        means, variances = [], []
        for u in (a, b):
            n = u.shape[0]
            if n < 2:
                raise ValueError(
                    f"the bias-corrected distance needs at least 2 units per side, got {n}"
                )
            r, sums = u[:, 0], u[:, 1 : 1 + d]
            total = float(r.sum())
            mean = sums.sum(0).div_(total)
            resid = torch.addr(sums, r, mean, alpha=-1)  # sᵢ − rᵢ x̄
            means.append(mean)
            variances.append(resid.square_().sum(0).mul_((n / total) ** 2 / (n * (n - 1))))
        return means[0] - means[1], variances[0], variances[1]

    def _weights(self, a: Tensor, b: Tensor) -> Tensor | None:
        """One over the pooled variance of every feature (0 for a constant one, which the
        measure leaves out), or ``None`` when not standardising."""
        if not self.standardise:
            return None
        d = (a.shape[1] - 1) // 2
        rows = float(a[:, 0].sum() + b[:, 0].sum())
        sums = a[:, 1 : 1 + d].sum(0) + b[:, 1 : 1 + d].sum(0)
        squares = a[:, 1 + d :].sum(0) + b[:, 1 + d :].sum(0)
        pooled = (squares - sums.square() / rows) / (rows - 1)
        keep = pooled > 1e-12 * squares / rows
        return torch.where(keep, 1 / pooled.where(keep, torch.ones_like(pooled)), 0.0)

    def statistic(self, a: Tensor, b: Tensor) -> float:
        diff, vx, vy = self._sides(a, b)
        w = self._weights(a, b)
        if w is None:
            return float(diff.square().sum()) - float(vx.sum()) - float(vy.sum())
        return float((w * (diff.square() - vx - vy)).sum())

    def plug_in(self, a: Tensor, b: Tensor) -> float:
        diff, *_ = self._sides(a, b)
        w = self._weights(a, b)
        return float(diff.square().sum() if w is None else (w * diff.square()).sum())

    def back(self, value: float) -> float:
        return value if math.isnan(value) else math.sqrt(max(0.0, value))
