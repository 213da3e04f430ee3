"""Effective sample size of a group whose rows cluster in units."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from app.engine.inference.bootstrap import unit_rows
from app.engine.inference.units import Design, Unit, choose_unit

__all__ = ["Effective", "effective_of", "effective_sizes", "icc"]


@dataclass(frozen=True)
class Effective:
    """One group's sizes.

    Attributes:
        units: number of units (images or boxes).
        rows: number of rows.
        icc: intra-class correlation of rows within units, in ``[0, 1]``.
        ess: effective sample size ``rows / (1 + (m̄ − 1)·icc)``, ``m̄ = rows / units``.
    """

    units: int
    rows: int
    icc: float
    ess: float


def icc(rows: Tensor, units: list[Tensor]) -> float:
    """One-way ANOVA intra-class correlation of ``rows`` grouped by ``units`` (index
    tensors), multivariate in trace form (sums of squares summed over features).

    ``MSB = Σ_u n_u‖r̄_u − r̄‖² / (U − 1)``, ``MSW = Σ_u Σ_i ‖r_ui − r̄_u‖² / (N − U)``,
    ``n₀ = (N − Σ n_u² / N) / (U − 1)``, ``ICC = (MSB − MSW) / (MSB + (n₀ − 1)·MSW)``,
    clamped to ``[0, 1]``. One unit gives 1 (all rows are one observation); one row per
    unit gives 0; no spread at all gives 0.
    """
    big_n, big_u = rows.shape[0], len(units)
    if big_u == 1:
        return 1.0
    if big_n == big_u:
        return 0.0
    sizes = torch.tensor([u.numel() for u in units], dtype=torch.float64)
    order = torch.cat(units)
    unit_of = torch.repeat_interleave(torch.arange(big_u), sizes.to(torch.long))
    # Rows centred on the grand mean, in float64; unit sums as one sparse (unit × row)
    # indicator product, and the within-unit sum of squares as the total less the
    # between-unit one: no gather of the rows and no index_add.
    centred = rows.to(torch.float64, copy=True)  # a copy: centred in place below
    centred -= centred.mean(0)
    indicator = torch.sparse_coo_tensor(
        torch.stack([unit_of, order]),
        torch.ones(order.numel(), dtype=torch.float64),
        (big_u, big_n),
        check_invariants=False,
    )
    means = torch.sparse.mm(indicator, centred) / sizes[:, None]
    ssb = float((sizes * means.square().sum(1)).sum())
    total = float(torch.linalg.vector_norm(centred, dim=1).square()[order].sum())
    ssw = max(0.0, total - ssb)
    msb, msw = ssb / (big_u - 1), ssw / (big_n - big_u)
    n0 = (big_n - float(sizes.square().sum()) / big_n) / (big_u - 1)
    den = msb + (n0 - 1) * msw
    if den <= 0:
        return 0.0
    return min(1.0, max(0.0, (msb - msw) / den))


def effective_of(rows: Tensor, units: list[Tensor]) -> Effective:
    """Units, rows, ICC and effective sample size of ``rows`` grouped by ``units``."""
    value = icc(rows, units)
    n, u = rows.shape[0], len(units)
    return Effective(units=u, rows=n, icc=value, ess=n / (1 + (n / u - 1) * value))


def effective_sizes(
    x: Tensor, y: Tensor, design: Design, *, unit: Unit | None = None
) -> tuple[Effective, Effective]:
    """Units, rows, ICC and effective sample size of each group.

    A unit is one image's rows within the group or one box's rows, as the test uses them
    (:func:`app.engine.inference.units.choose_unit`).

    Raises:
        ValueError: a design that does not match the rows.
    """
    x, y = design.samples(x, y)
    chosen = choose_unit(design, unit)
    return (
        effective_of(x, unit_rows(design.x_boxes, design.x_images, chosen)),
        effective_of(y, unit_rows(design.y_boxes, design.y_images, chosen)),
    )
