"""Bootstrap over units: intervals cover the true distance about 95% of the time."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from scipy.stats import binom

from app.engine.inference import Design, bootstrap_interval


def _mean_gap(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.mean(0) - b.mean(0)).norm())


def _group(rng: torch.Generator, images: int, rows: int, centre: torch.Tensor) -> torch.Tensor:
    effects = torch.randn(images, 1, 2, generator=rng, dtype=torch.float64)
    noise = 0.3 * torch.randn(images, rows, 2, generator=rng, dtype=torch.float64)
    return (centre + effects + noise).reshape(-1, 2)


def test_unit_bootstrap_covers_the_true_distance_at_about_95_percent() -> None:
    rng = torch.Generator().manual_seed(5)
    images, rows, reps = 40, 3, 200
    truth = 4.0
    centre = torch.tensor([truth, 0.0], dtype=torch.float64)
    design = Design.from_boxes(
        [(i, i, rows) for i in range(images)], [(i + 100, i + 100, rows) for i in range(images)]
    )
    naive = Design.independent(images * rows, images * rows)
    unit_cover = row_cover = 0
    for rep in range(reps):
        x = _group(rng, images, rows, torch.zeros(2, dtype=torch.float64))
        y = _group(rng, images, rows, centre)
        low, high, used = bootstrap_interval(_mean_gap, x, y, design, resamples=200, seed=rep)
        assert used == 200 and low < high
        unit_cover += low <= truth <= high
        low, high, _ = bootstrap_interval(_mean_gap, x, y, naive, resamples=200, seed=rep)
        row_cover += low <= truth <= high
    band = binom.ppf([0.025, 0.975], reps, 0.95) / reps
    print(f"\ncoverage over {reps}: units {unit_cover / reps:.3f}, rows {row_cover / reps:.3f}")
    assert band[0] <= unit_cover / reps <= band[1], (unit_cover / reps, band)
    assert row_cover / reps < 0.85  # rows treated as independent: intervals far too short


def test_interval_is_seeded_and_resamples_units_within_each_side() -> None:
    # x's two units are constant rows 0 and 10; a resample's mean is 0, 5 or 10.
    x = torch.tensor([[0.0], [0.0], [10.0], [10.0]], dtype=torch.float64)
    y = torch.zeros(3, 1, dtype=torch.float64)
    design = Design.from_boxes([(1, "a", 2), (2, "b", 2)], [(3, "c", 3)])
    seen = set()

    def stat(a: torch.Tensor, b: torch.Tensor) -> float:
        seen.add((a.shape[0], float(a.mean())))
        return float(a.mean() - b.mean())

    first = bootstrap_interval(stat, x, y, design, resamples=300, seed=1, level=0.9)
    assert first == bootstrap_interval(stat, x, y, design, resamples=300, seed=1, level=0.9)
    assert seen == {(4, 0.0), (4, 5.0), (4, 10.0)}
    assert first.low == 0.0 and first.high == 10.0
    with pytest.raises(ValueError, match="level"):
        bootstrap_interval(stat, x, y, design, level=1.0)


def test_bootstrap_and_slow_permutations_stop_when_cancelled() -> None:
    from app.engine.inference import permutation_test

    x, y = torch.randn(6, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    calls: list[int] = []

    def statistic(a: torch.Tensor, b: torch.Tensor) -> float:
        calls.append(1)
        return float((a.mean(0) - b.mean(0)).norm())

    def after(n: int) -> Callable[[], bool]:
        return lambda: len(calls) >= n

    with pytest.raises(InterruptedError):
        bootstrap_interval(
            statistic, x, y, Design.independent(6, 5), resamples=500, cancelled=after(3)
        )
    assert len(calls) == 3
    calls.clear()
    with pytest.raises(InterruptedError):
        permutation_test(
            statistic, x, y, Design.independent(6, 5), permutations=400, cancelled=after(5)
        )
    assert len(calls) == 5  # the observed value and four assignments, not a whole batch
