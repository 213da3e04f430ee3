"""A measure on resampled rows (what a bootstrap evaluates) equals the measure called on
those rows: for every registered measure, and for MMD's own path through the pooled rows'
squared distances at every kernel and estimator."""

from __future__ import annotations

import pytest
import torch

from app.engine.inference import Design, bootstrap_interval
from app.engine.measures import MEASURES, get_measure
from app.engine.measures.mmd import RESAMPLED_ROWS


def _draws(n: int, m: int, count: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randint(n, (n,), generator=g), torch.randint(m, (m,), generator=g))
        for _ in range(count)
    ]


@pytest.mark.parametrize("name", sorted(MEASURES))
def test_every_measure_on_resampled_rows_equals_the_measure_on_those_rows(name: str) -> None:
    g = torch.Generator().manual_seed(5)
    x = torch.randn(7, 9, generator=g, dtype=torch.float64)
    y = torch.randn(7, 9, generator=g, dtype=torch.float64) + 0.3
    measure = get_measure(name)
    on_rows = measure.resampler(x, y)
    for i, j in _draws(7, 7, 6, seed=1):
        try:
            expected = measure(x[i], y[j])
        except ValueError:
            with pytest.raises(ValueError):
                on_rows(i, j)
            continue
        assert on_rows(i, j) == pytest.approx(expected, rel=1e-12, abs=1e-14)


MMD_OPTIONS = [
    {},
    {"estimator": "unbiased"},
    {"kernel": "multi"},
    {"sigma": [3.0, 11.0]},
    {"kernel": "multi", "sigma": 4.0, "kernel_mul": 3.0, "kernel_num": 4},
    {"estimator": "unbiased", "kernel": "multi", "kernel_num": 1},
]


@pytest.mark.parametrize(
    ("options", "sizes"),
    [
        (options, sizes)
        for options in MMD_OPTIONS
        for sizes in [(40, 31), (1, 3), (2, 2)]
        if options.get("estimator") != "unbiased" or min(sizes) >= 2  # it needs 2 a side
    ],
)
def test_mmd_resamples_from_pooled_distances_equal_the_measure(
    options: dict[str, object], sizes: tuple[int, int]
) -> None:
    n, m = sizes
    g = torch.Generator().manual_seed(n * 100 + m)
    x = torch.randn(n, 33, generator=g, dtype=torch.float64)
    y = torch.randn(m, 33, generator=g, dtype=torch.float64) * 1.3
    measure = get_measure("mmd", **options)
    fast = measure.resampled(x, y)
    assert fast is not None
    for i, j in _draws(n, m, 25, seed=2):  # with rows drawn twice, and (1, 3) all alike
        assert fast(i, j) == pytest.approx(measure(x[i], y[j]), rel=1e-11, abs=1e-15)


def test_mmd_resamples_of_float32_rows_agree_to_float32_rounding() -> None:
    g = torch.Generator().manual_seed(9)
    x, y = torch.randn(40, 1280, generator=g), torch.randn(37, 1280, generator=g) + 0.05
    measure = get_measure("mmd")
    on_rows = measure.resampler(x, y)
    for i, j in _draws(40, 37, 10, seed=3):
        assert on_rows(i, j) == pytest.approx(measure(x[i], y[j]), rel=1e-5)


def test_mmd_resamples_above_the_median_heuristics_rows_take_its_subset() -> None:
    g = torch.Generator().manual_seed(4)
    x = torch.randn(700, 5, generator=g, dtype=torch.float64)
    y = torch.randn(600, 5, generator=g, dtype=torch.float64) + 0.2
    for options in ({}, {"median_seed": 7}, {"estimator": "unbiased"}):
        measure = get_measure("mmd", **options)
        on_rows = measure.resampler(x, y)
        for i, j in _draws(700, 600, 3, seed=5):
            assert on_rows(i, j) == pytest.approx(measure(x[i], y[j]), rel=1e-10)


def test_mmd_keeps_its_own_call_past_its_rows_or_for_the_linear_estimator() -> None:
    g = torch.Generator().manual_seed(4)
    big = torch.randn(RESAMPLED_ROWS - 20, 2, generator=g, dtype=torch.float64)
    small = torch.randn(21, 2, generator=g, dtype=torch.float64)
    assert get_measure("mmd").resampled(big, small) is None  # one row too many
    assert get_measure("mmd", estimator="linear").resampled(small, small) is None
    # within the rows, but a resample of image units may draw more: computed as usual
    measure = get_measure("mmd")
    on_rows = measure.resampler(big, small[:20])
    i = torch.cat([torch.arange(len(big)), torch.arange(30)])
    j = torch.arange(20)
    assert len(i) + len(j) > RESAMPLED_ROWS
    assert on_rows(i, j) == measure(big[i], small[j])
    with pytest.raises(ValueError, match="2 samples per side"):
        get_measure("mmd", estimator="unbiased").resampler(small, small)(
            torch.tensor([0]), torch.tensor([1, 2])
        )


@pytest.mark.parametrize("method", ["studentized", "bca", "percentile"])
def test_mmd_interval_through_the_resampler_equals_calling_the_measure(method: str) -> None:
    g = torch.Generator().manual_seed(6)
    x = torch.randn(12, 2, generator=g, dtype=torch.float64)
    y = torch.randn(9, 2, generator=g, dtype=torch.float64) + 1.5
    measure = get_measure("mmd", kernel="multi")
    design = Design(
        x_boxes=tuple(range(12)),
        x_images=tuple(b // 2 for b in range(12)),  # image units: 6 images of 2 boxes
        y_boxes=tuple(range(12, 21)),
        y_images=tuple(100 + b // 3 for b in range(9)),
    )
    kwargs = {"resamples": 60, "seed": 8, "method": method, "plug_in": measure.plug_in}
    through = bootstrap_interval(measure, x, y, design, **kwargs)  # type: ignore[arg-type]
    called = bootstrap_interval(lambda a, b: measure(a, b), x, y, design, **kwargs)  # type: ignore[arg-type]
    assert through.resamples == called.resamples
    assert through.low < through.high  # not NaN
    assert through.low == pytest.approx(called.low, rel=1e-9)
    assert through.high == pytest.approx(called.high, rel=1e-9)
