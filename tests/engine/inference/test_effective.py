"""Effective sample size equals a hand computation of the one-way ANOVA ICC."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from app.engine.inference import Design, effective_sizes, icc


def _hand_icc(groups: list[np.ndarray]) -> float:
    allrows = np.concatenate(groups)
    n, u = len(allrows), len(groups)
    grand = allrows.mean(0)
    ssb = sum(len(g) * ((g.mean(0) - grand) ** 2).sum() for g in groups)
    ssw = sum(((g - g.mean(0)) ** 2).sum() for g in groups)
    msb, msw = ssb / (u - 1), ssw / (n - u)
    n0 = (n - sum(len(g) ** 2 for g in groups) / n) / (u - 1)
    return float(np.clip((msb - msw) / (msb + (n0 - 1) * msw), 0, 1))


def test_ess_equals_a_hand_computation_on_unequal_units() -> None:
    rng = np.random.default_rng(4)
    sizes = [3, 5, 2, 4]
    groups = [rng.normal(size=(s, 3)) + rng.normal(size=3) * 2 for s in sizes]
    x = torch.from_numpy(np.concatenate(groups))
    y = torch.from_numpy(rng.normal(size=(5, 3)))
    design = Design.from_boxes(
        [(i, i, s) for i, s in enumerate(sizes)], [(10 + j, 10 + j, 1) for j in range(5)]
    )
    ex, ey = effective_sizes(x, y, design)
    rho = _hand_icc(groups)
    assert 0.3 < rho < 1
    assert ex.icc == pytest.approx(rho, rel=1e-12)
    assert (ex.units, ex.rows) == (4, 14)
    assert ex.ess == pytest.approx(14 / (1 + (14 / 4 - 1) * rho), rel=1e-12)
    assert (ey.units, ey.rows, ey.icc, ey.ess) == (5, 5, 0.0, 5.0)


def test_icc_edges() -> None:
    rows = torch.tensor([[0.0], [0.0], [1.0], [1.0]], dtype=torch.float64)
    a, b = torch.tensor([0, 1]), torch.tensor([2, 3])
    assert icc(rows, [a, b]) == 1.0  # copies within units
    assert icc(rows, [torch.arange(4)]) == 1.0  # one unit is one observation
    spread = torch.tensor([[0.0], [1.0], [0.0], [1.0]], dtype=torch.float64)
    assert icc(spread, [a, b]) == 0.0  # negative ANOVA estimate clamped


def test_icc_of_float32_rows_in_shuffled_units_equals_the_hand_computation() -> None:
    rng = np.random.default_rng(11)
    labels = rng.integers(0, 37, size=3199)  # 37 units of uneven sizes, rows interleaved
    offsets = rng.normal(size=(37, 5)) * 0.3 + 100.0  # a large common mean: no cancellation
    rows = (offsets[labels] + rng.normal(size=(3199, 5))).astype(np.float32)
    units = [torch.from_numpy(np.flatnonzero(labels == u)) for u in range(37)]
    expected = _hand_icc([rows[labels == u].astype(np.float64) for u in range(37)])
    assert 0.01 < expected < 0.5
    assert icc(torch.from_numpy(rows), units) == pytest.approx(expected, rel=1e-9)
