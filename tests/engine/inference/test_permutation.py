"""The unit-level permutation test: MMD fast path, null calibration on clustered data."""

from __future__ import annotations

from functools import partial
from typing import Any

import pytest
import torch
from scipy.stats import binom

from app.engine.inference import Design, permutation_test
from app.engine.inference import permutation as permutation_module
from app.engine.inference.exact import assignment_batches
from app.engine.inference.units import Scheme, scheme
from app.engine.measures import mmd
from app.engine.measures.mmd import MMD
from benchmarks.real_boxes import box_rows

# Units of unequal size, boxes of one image in one group, and one image in both groups.
_DESIGN = Design.from_boxes(
    [(1, "a", 4), (2, "a", 4), (3, "b", 3), (4, "s", 4), (5, "c", 2)],
    [(6, "d", 4), (7, "s", 3), (8, "e", 4), (9, "e", 1), (10, "f", 5)],
)


def _data(seed: int, shift: float) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    nx, ny = _DESIGN.n_rows
    return (
        torch.randn(nx, 5, generator=g, dtype=torch.float64),
        torch.randn(ny, 5, generator=g, dtype=torch.float64) + shift,
    )


@pytest.mark.parametrize(
    "options",
    [
        {"estimator": "biased"},
        {"estimator": "unbiased"},
        {"estimator": "biased", "kernel": "multi"},
        {"estimator": "unbiased", "sigma": 1.3},
    ],
)
@pytest.mark.parametrize("permutations", [30, 5000])  # random draws, then exact (40)
def test_mmd_fast_path_equals_calling_mmd_for_every_assignment(
    options: dict[str, object], permutations: int
) -> None:
    x, y = _data(0, 0.4)
    slow_fn = partial(mmd, **options)
    fast = permutation_test(
        slow_fn, x, y, _DESIGN, permutations=permutations, seed=7, mmd_options=options
    )
    slow = permutation_test(slow_fn, x, y, _DESIGN, permutations=permutations, seed=7)
    assert fast.exact == slow.exact == (permutations == 5000)
    assert fast.statistic == pytest.approx(slow.statistic, rel=1e-10, abs=1e-12)
    torch.testing.assert_close(fast.null, slow.null, rtol=1e-10, atol=1e-12)
    assert fast.p_value == slow.p_value and fast.min_p == slow.min_p


def test_mmd_fast_path_walking_kernel_blocks_equals_the_whole_kernel(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    x, y = _data(2, 0.2)
    opts = {"estimator": "unbiased", "kernel": "multi"}
    whole = permutation_test(
        partial(mmd, **opts), x, y, _DESIGN, permutations=25, seed=1, mmd_options=opts
    )
    monkeypatch.setattr(permutation_module, "_FULL_KERNEL_ROWS", 0)
    blocks = permutation_test(
        partial(mmd, **opts), x, y, _DESIGN, permutations=25, seed=1, mmd_options=opts
    )
    torch.testing.assert_close(blocks.null, whole.null, rtol=1e-10, atol=1e-12)


def test_an_mmd_instance_takes_the_fast_path() -> None:
    x, y = _data(1, 0.0)
    calls = []

    class Counting(MMD):
        def compute(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            calls.append(1)
            return super().compute(*args, **kwargs)

    res = permutation_test(Counting(), x, y, _DESIGN, permutations=200, seed=2)
    assert len(calls) == 1  # the observed value only, to check the fast path against
    ref = permutation_test(lambda a, b: mmd(a, b), x, y, _DESIGN, permutations=200, seed=2)
    torch.testing.assert_close(res.null, ref.null, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    "options", [{"kernel": "multi", "kernel_num": 3}, {"estimator": "unbiased", "sigma": 0.7}]
)
def test_a_configured_mmd_instance_keeps_its_options_on_the_fast_path(
    options: dict[str, object],
) -> None:
    x, y = _data(3, 0.2)
    calls = []

    class Counting(MMD):
        def compute(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            calls.append(1)
            return super().compute(*args, **kwargs)

    res = permutation_test(Counting(**options), x, y, _DESIGN, permutations=100, seed=4)
    assert len(calls) == 1  # not the slow fallback: the instance's options were read
    ref = permutation_test(partial(mmd, **options), x, y, _DESIGN, permutations=100, seed=4)
    torch.testing.assert_close(res.null, ref.null, rtol=1e-10, atol=1e-12)


def _clustered(
    rng: torch.Generator, images: int, boxes: int, rows: int, shift: float
) -> tuple[torch.Tensor, list[tuple[int, int, int]]]:
    """Rows = group shift + image effect + box effect + row noise (strongly clustered)."""
    d = 3
    out, spec = [], []
    for i in range(images):
        img = 1.0 * torch.randn(d, generator=rng, dtype=torch.float64)
        for _ in range(boxes):
            box = 0.5 * torch.randn(d, generator=rng, dtype=torch.float64)
            noise = 0.2 * torch.randn(rows, d, generator=rng, dtype=torch.float64)
            out.append(img + box + noise + shift)
            spec.append((len(spec), i, rows))
    return torch.cat(out), spec


def _mean_gap(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.mean(0) - b.mean(0)).norm())


def _rates(shift: float, repetitions: int) -> tuple[float, float]:
    rng = torch.Generator().manual_seed(11)
    unit_hits = row_hits = 0
    for rep in range(repetitions):
        x, sx = _clustered(rng, 5, 3, 4, 0.0)
        y, sy = _clustered(rng, 5, 3, 4, shift)
        sy = [(b + 1000, i + 1000, r) for b, i, r in sy]
        design = Design.from_boxes(sx, sy)
        unit = permutation_test(_mean_gap, x, y, design, permutations=99, seed=rep)
        rows = permutation_test(
            _mean_gap, x, y, Design.independent(*design.n_rows), permutations=99, seed=rep
        )
        assert unit.unit == "image" and unit.n_units == (5, 5) and rows.unit == "box"
        assert unit.p_value is not None and rows.p_value is not None
        unit_hits += unit.p_value <= 0.05
        row_hits += rows.p_value <= 0.05
    return unit_hits / repetitions, row_hits / repetitions


def test_unit_level_test_holds_its_level_where_row_level_does_not() -> None:
    reps = 240
    unit_rate, row_rate = _rates(0.0, reps)
    print(
        f"\nclustered null, {reps} repetitions: unit-level {unit_rate:.3f}, "
        f"row-level {row_rate:.3f}"
    )
    # The central binomial 95% range of the rejection count at level 0.05.
    low, high = binom.ppf([0.025, 0.975], reps, 0.05) / reps
    assert low <= unit_rate <= high, (unit_rate, low, high)
    assert row_rate > 0.4, row_rate


def test_unit_level_test_detects_a_real_shift() -> None:
    unit_rate, _ = _rates(2.5, 40)
    assert unit_rate >= 0.8, unit_rate


def test_float32_random_draws_over_single_rows_match_the_float64_loop() -> None:
    # One row per box: the unit-level sums are the kernel itself (its own code path), and
    # float32 rows with random draws take the float32 products.
    g = torch.Generator().manual_seed(5)
    x = torch.randn(37, 6, generator=g)
    y = torch.randn(29, 6, generator=g) + 0.3
    design = Design.independent(37, 29)
    fast = permutation_test(MMD(kernel="multi"), x, y, design, permutations=300, seed=3)
    slow = permutation_test(
        lambda a, b: mmd(a, b, kernel="multi"), x, y, design, permutations=300, seed=3
    )
    assert not fast.exact and fast.null.dtype == torch.float64
    assert fast.statistic == pytest.approx(slow.statistic, rel=1e-5)
    torch.testing.assert_close(fast.null, slow.null, rtol=1e-4, atol=1e-7)
    assert fast.p_value == slow.p_value
    assert float(fast.null.std()) > 1e-3 * float(fast.null.mean())  # the draws differ


def test_random_draws_keep_each_stratum_size() -> None:
    from app.engine.inference.exact import assignment_batches
    from app.engine.inference.units import scheme

    plan = scheme(_DESIGN)
    exact, count, batches = assignment_batches(plan, permutations=39, seed=0)  # of 40
    drawn = torch.cat(list(batches))
    assert not exact and drawn.shape[0] == count == 39
    for stratum in plan.strata:
        members = torch.tensor(stratum.elements)
        assert bool((drawn[:, members].sum(1) == stratum.k).all())


def _kthvalue_draws(plan: Scheme, draws: int, seed: int, batch: int = 256) -> torch.Tensor:
    # The draws as torch's kthvalue selected them before numpy's partition took over:
    # the same seed must keep giving the same assignments.
    g = torch.Generator().manual_seed(seed)
    n = len(plan.element_sides)
    parts = []
    for start in range(0, draws, batch):
        size = min(batch, draws - start)
        out = torch.zeros(size, n, dtype=torch.bool)
        for stratum in plan.strata:
            members = torch.tensor(stratum.elements, dtype=torch.long)
            if stratum.k == 0:
                continue
            u = torch.rand(size, members.numel(), generator=g)
            out[:, members] = u <= u.kthvalue(stratum.k, dim=1, keepdim=True).values
        parts.append(out)
    return torch.cat(parts)


@pytest.mark.parametrize(
    "design", [_DESIGN, Design.independent(301, 250)], ids=["strata", "one-stratum"]
)
def test_random_draws_are_the_seeds_kthvalue_draws(design: Design) -> None:
    plan = scheme(design)
    _, count, batches = assignment_batches(
        plan, permutations=39 if design is _DESIGN else 600, seed=9
    )
    drawn = torch.cat(list(batches))
    assert torch.equal(drawn, _kthvalue_draws(plan, count, 9))


def test_bfloat16_products_give_the_float64_p_value(monkeypatch: pytest.MonkeyPatch) -> None:
    # 160 single-row units with bfloat16 products forced whatever the CPU (and from 100
    # units on, not 512, to keep the reference loop short); no shift, so the observed
    # statistic sits inside the null (same distribution), where ranks are close.
    monkeypatch.setattr(permutation_module, "_native_bfloat16", lambda: True)
    monkeypatch.setattr(permutation_module, "_BFLOAT16_FROM", 100)
    fast_calls: list[int] = []
    values = permutation_module._MMDNull.values

    def spy(self: Any, elements: torch.Tensor, *, fast: bool = False) -> torch.Tensor:
        if fast:
            fast_calls.append(elements.shape[0])
        return values(self, elements, fast=fast)

    monkeypatch.setattr(permutation_module._MMDNull, "values", spy)
    g = torch.Generator().manual_seed(21)
    x = torch.randn(90, 24, generator=g)
    y = torch.randn(70, 24, generator=g)
    design = Design.independent(90, 70)
    fast = permutation_test(MMD(kernel="multi"), x, y, design, permutations=400, seed=5)
    slow = permutation_test(
        lambda a, b: mmd(a, b, kernel="multi"), x, y, design, permutations=400, seed=5
    )
    assert sum(fast_calls) == 400  # every draw went through the bfloat16 forms once
    assert slow.p_value is not None and 0.05 < slow.p_value < 0.95
    assert fast.statistic == pytest.approx(slow.statistic, rel=1e-5)
    assert fast.p_value == slow.p_value
    spread = float(slow.null.std())
    error = (fast.null - slow.null).abs()
    assert float(error.max()) < 0.1 * spread  # bfloat16 values far from the statistic
    near = (slow.null - slow.statistic).abs() < spread / 10  # the margin is one eighth
    assert int(near.sum()) >= 5
    assert float(error[near].max()) < 1e-3 * spread  # recomputed precisely near it


@pytest.mark.slow
def test_bfloat16_products_keep_the_precise_p_and_the_level_under_a_null_of_real_boxes(
    monkeypatch: pytest.MonkeyPatch, embedded_model: Any, photo: Any
) -> None:
    # A null built from real boxes: `gap` at conv_head of 160 boxes of one grass photo,
    # labelled 90/70 at random in each replicate (random labels make the null hold exactly,
    # whatever the boxes share). bfloat16 products forced whatever the CPU, from 100 units.
    g = torch.Generator().manual_seed(3)
    rows = box_rows(embedded_model, photo.decoded("grass"), 160, g)
    native = {"on": True}
    monkeypatch.setattr(permutation_module, "_native_bfloat16", lambda: native["on"])
    monkeypatch.setattr(permutation_module, "_BFLOAT16_FROM", 100)
    design, reps, rejected = Design.independent(90, 70), 200, 0
    for rep in range(reps):
        order = torch.randperm(160, generator=g)
        x, y = rows[order[:90]], rows[order[90:]]
        p = []
        for on in (True, False):
            native["on"] = on
            p.append(permutation_test(MMD(), x, y, design, permutations=99, seed=rep).p_value)
        assert p[0] == p[1], (rep, p)  # bfloat16 draws near the statistic were recomputed
        rejected += p[0] is not None and p[0] <= 0.05
    low, high = binom.ppf([0.025, 0.975], reps, 0.05)
    assert low <= rejected <= high, (rejected, low, high)
