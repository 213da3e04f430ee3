"""The Euclidean measures' interval, built on the bias-corrected squared distance between
group means with unit-level variances: equal to numpy by hand, centred where resampling
centres it, and it covers a true gap of 0 where the interval on ‖x̄−ȳ‖ does not."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from app.engine.inference import Design, bootstrap_interval, matrix_tests
from app.engine.inference.bootstrap import AT_ZERO, unit_rows
from app.engine.inference.matrix import Group
from app.engine.measures import get_measure
from app.engine.measures._squared_gap import SquaredGap


def _np_units(rows: np.ndarray, sizes: list[int]) -> list[np.ndarray]:
    return np.split(rows, np.cumsum(sizes)[:-1])


def _np_d2(xu: list[np.ndarray], yu: list[np.ndarray], standardise: bool) -> tuple[float, float]:
    """(D̂², ‖x̄−ȳ‖²) by hand: a group's mean as Σ rows / Σ rᵢ, its variance by the ratio
    estimator Σ ‖sᵢ − rᵢ x̄‖² / (r̄² n (n−1)); standardised by scipy's pooled ddof=1 variance."""
    pooled = np.concatenate(xu + yu)
    w = np.ones(pooled.shape[1])
    if standardise:
        var = pooled.var(0, ddof=1)
        w = np.where(var > 0, 1 / np.where(var > 0, var, 1), 0)
    means, variances = [], []
    for units in (xu, yu):
        n = len(units)
        r = np.array([len(u) for u in units], dtype=float)
        s = np.stack([u.sum(0) for u in units])
        mean = s.sum(0) / r.sum()
        resid = (s - r[:, None] * mean) / r.mean()
        means.append(mean)
        variances.append((resid**2).sum(0) / (n * (n - 1)))
    diff2 = (means[0] - means[1]) ** 2
    return float((w * (diff2 - variances[0] - variances[1])).sum()), float((w * diff2).sum())


@pytest.mark.parametrize("standardise", [False, True])
@pytest.mark.parametrize("sizes", [([1, 3, 2, 2, 1], [3, 1, 4]), ([2] * 5, [2] * 3)])
def test_squared_gap_equals_numpy_by_hand(
    sizes: tuple[list[int], list[int]], standardise: bool
) -> None:
    rng = np.random.default_rng(7)
    d = 5
    xr = rng.lognormal(size=(sum(sizes[0]), d)) + 40.0  # far from 0: sums of squares must cope
    yr = rng.normal(size=(sum(sizes[1]), d)) + 40.3
    xr[:, 2] = yr[:, 2] = 41.0  # a constant feature: std_euclidean leaves it out
    scale = SquaredGap(standardise=standardise)
    design = Design.from_boxes(
        [(i, i, r) for i, r in enumerate(sizes[0])],
        [(100 + i, 100 + i, r) for i, r in enumerate(sizes[1])],
    )
    ux = unit_rows(design.x_boxes, design.x_images, "box")
    uy = unit_rows(design.y_boxes, design.y_images, "box")
    a, b = scale.summarise(torch.from_numpy(xr), torch.from_numpy(yr), ux, uy)
    want, plug = _np_d2(_np_units(xr, sizes[0]), _np_units(yr, sizes[1]), standardise)
    assert scale.statistic(a, b) == pytest.approx(want, rel=1e-9, abs=1e-12)
    assert scale.plug_in(a, b) == pytest.approx(plug, rel=1e-9)
    measure = get_measure("std_euclidean" if standardise else "euclidean")
    assert measure.interval_scale is not None
    # the plug-in is the measure's own value, squared
    assert scale.plug_in(a, b) == pytest.approx(
        measure(torch.from_numpy(xr), torch.from_numpy(yr)) ** 2, rel=1e-9
    )
    with pytest.raises(ValueError, match="at least 2 units"):
        scale.statistic(a[:1], b)
    assert scale.back(-3.0) == 0.0 and scale.back(4.0) == 2.0 and np.isnan(scale.back(np.nan))


def test_resampling_units_centres_the_corrected_square_on_the_plug_in() -> None:
    # Over EVERY resample of 3 vs 3 images with 2 boxes each (27² of them), the mean of
    # D̂²* is exactly ‖x̄−ȳ‖² (the studentized pivot's centre): the unit-level variance
    # corrects the resampling bias exactly, a row-level one (6 rows, not 3 units) would not.
    rng = np.random.default_rng(2)
    x, y = torch.from_numpy(rng.normal(size=(6, 4))), torch.from_numpy(rng.normal(size=(6, 4)))
    design = Design.from_boxes(
        [(i, i // 2, 1) for i in range(6)], [(9 + i, 9 + i // 2, 1) for i in range(6)]
    )
    ux = unit_rows(design.x_boxes, design.x_images, "image")
    uy = unit_rows(design.y_boxes, design.y_images, "image")
    scale = SquaredGap()
    a, b = scale.summarise(x, y, ux, uy)
    draws = list(itertools.product(range(3), repeat=3))
    total = sum(scale.statistic(a[list(p)], b[list(q)]) for p in draws for q in draws)
    assert total / len(draws) ** 2 == pytest.approx(scale.plug_in(a, b), rel=1e-10)

    def row_level(p: tuple[int, ...], q: tuple[int, ...]) -> float:
        a_rows = torch.cat([x[ux[i]] for i in p])
        b_rows = torch.cat([y[uy[i]] for i in q])
        diff2 = float(((a_rows.mean(0) - b_rows.mean(0)) ** 2).sum())
        return diff2 - float(a_rows.var(0).sum()) / 6 - float(b_rows.var(0).sum()) / 6

    rows_total = sum(row_level(p, q) for p in draws for q in draws)
    assert abs(rows_total / len(draws) ** 2 - scale.plug_in(a, b)) > 0.05


def test_the_interval_is_the_studentized_one_on_the_corrected_square() -> None:
    # bootstrap_interval(scale=…) against a numpy bootstrap-t on D̂² over the same draws
    from tests.engine.inference.test_bootstrap_studentized import _by_hand

    rng = np.random.default_rng(4)
    sizes = [2, 1, 3, 2, 2, 1]
    xr, yr = rng.normal(size=(11, 3)), rng.normal(size=(10, 3)) + 3.0
    design = Design.from_boxes(
        [(i, i, r) for i, r in enumerate(sizes)], [(50 + i, 50 + i, 2) for i in range(5)]
    )
    xu, yu = _np_units(xr, sizes), _np_units(yr, [2] * 5)
    draws = [(rng.integers(0, 6, 6).tolist(), rng.integers(0, 5, 5).tolist()) for _ in range(201)]
    measure = get_measure("euclidean")
    got = bootstrap_interval(
        measure,
        torch.from_numpy(xr),
        torch.from_numpy(yr),
        design,
        draws=draws,
        inner=7,
        seed=3,
        plug_in=measure.plug_in,
        scale=measure.interval_scale,
    )

    # each unit as one object "row" holding its own rows, so the numpy statistic sees units
    def wrap(units: list[np.ndarray]) -> list[np.ndarray]:
        out = []
        for u in units:
            cell = np.empty(1, dtype=object)
            cell[0] = u
            out.append(cell)
        return out

    wrap_x, wrap_y = wrap(xu), wrap(yu)

    def d2(a: np.ndarray, b: np.ndarray) -> float:
        return _np_d2(list(a), list(b), False)[0]

    centre = _np_d2(xu, yu, False)[1]
    low, high = _by_hand(d2, wrap_x, wrap_y, draws, inner=7, seed=3, level=0.95, centre=centre)
    assert got.method == "studentized" and got.resamples == 201
    assert got.low == pytest.approx(np.sqrt(max(low, 0.0)), rel=1e-9, abs=1e-12)
    assert got.high == pytest.approx(np.sqrt(max(high, 0.0)), rel=1e-9)
    assert 0 < got.low < got.high


def test_a_matrix_without_a_gap_says_so_and_what_the_interval_is_for() -> None:
    # 64 features, 10 vs 10 images × 2 boxes from one distribution: ‖x̄−ȳ‖ ≈ 5 from noise
    # alone, and the interval on it excluded 0; the corrected one starts at 0 and the answer
    # says what the interval is for, since the value shown lies above it.
    g = torch.Generator().manual_seed(11)
    groups = {}
    for k in "ab":
        rows = (
            torch.randn(10, 1, 64, generator=g, dtype=torch.float64)
            + 0.5 * torch.randn(10, 2, 64, generator=g, dtype=torch.float64)
        ).reshape(20, 64)
        groups[k] = Group(
            rows, tuple(f"{k}{i}" for i in range(20)), tuple(f"im-{k}{i // 2}" for i in range(20))
        )
    measure = get_measure("euclidean")
    t = matrix_tests(groups, measure, bootstrap=100, seed=0)
    (pair,) = t.tests
    assert pair.interval is not None and pair.interval.low == 0.0
    assert pair.interval.high < pair.statistic
    scale = measure.interval_scale
    assert scale is not None
    assert f"a vs b: {scale.note}" in t.warnings and f"a vs b: {AT_ZERO}" in t.warnings
    plain = bootstrap_interval(
        measure,
        groups["a"].rows,
        groups["b"].rows,
        Design(groups["a"].boxes, groups["a"].images, groups["b"].boxes, groups["b"].images),
        resamples=100,
        seed=0,
    )
    assert plain.low > 0  # the interval on ‖x̄−ȳ‖ itself claims a gap


def test_coverage_at_a_true_gap_of_0_and_with_a_gap() -> None:
    # 20 vs 20 images × 2 boxes (benchmarks/calibration.py) at a modest 60 replicates × 100
    # resamples × 8 inner (the bench: 300 × 200 × 10): the corrected interval covers the
    # true 0 in 256 dimensions and a real gap in 16 and 256; the one on ‖x̄−ȳ‖ never
    # covers the 0.
    from benchmarks.calibration import COVERAGE_SETTINGS, coverage_rates

    wanted = {
        ("gap", "d=256, shift 0"),
        ("gap_squared", "d=256, shift 0"),
        ("gap_squared", "d=16, shift 2"),
        ("gap_squared", "d=256, shift 4"),
    }
    settings = [
        s
        for s in COVERAGE_SETTINGS
        if "20 vs 20 images" in s.label
        and any(s.statistic == stat and where in s.label for stat, where in wanted)
    ]
    assert len(settings) == 4
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny statistics: the thread pool costs more than it gives
    try:
        found = coverage_rates(60, 100, settings=settings, methods=("studentized",), inner=8)
    finally:
        torch.set_num_threads(threads)
    rows = {(r.setting.split(",")[0], r.setting.split(", ")[2]): r for r in found}
    app = "√D̂²₊ (the app's)"
    assert rows[app, "d=256"].rate >= 0.9, rows[app, "d=256"]  # the boundary
    assert rows[app, "d=16"].rate >= 0.85, rows[app, "d=16"]
    assert rows["‖x̄−ȳ‖", "d=256"].rate <= 0.1, rows["‖x̄−ȳ‖", "d=256"]
    gap = next(r for r in found if r.setting.startswith(app) and "shift 4" in r.setting)
    assert gap.rate >= 0.85, gap
