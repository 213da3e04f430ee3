"""Exact enumeration equals brute force over every label vector of the rows."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from app.engine.inference import (
    Design,
    assignment_batches,
    count_assignments,
    permutation_test,
    scheme,
)
from app.engine.inference.exact import fewest_more_units
from app.engine.measures import mmd


def _mean_gap(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.mean(0) - b.mean(0)).norm())


def _brute(design: Design, unit: str) -> list[tuple[bool, ...]]:
    """Every row labelling that keeps rows of a unit together and, for each image in both
    groups (when the unit is an image), its number of boxes per group; free units keep
    the number of units per group."""
    boxes = list(design.x_boxes) + list(design.y_boxes)
    images = list(design.x_images) + list(design.y_images)
    side = [True] * len(design.x_boxes) + [False] * len(design.y_boxes)
    shared = set(design.x_images) & set(design.y_images) if unit == "image" else set()
    key = [
        (b,) if unit == "box" or i in shared else (i, s)
        for b, i, s in zip(boxes, images, side, strict=True)
    ]
    units = list(dict.fromkeys(key))
    out = []
    for labels in itertools.product([True, False], repeat=len(units)):
        lab = dict(zip(units, labels, strict=True))
        rows = tuple(lab[k] for k in key)
        free = [u for u in units if not (len(u) == 1 and images[key.index(u)] in shared)]
        obs_free = sum(side[key.index(u)] for u in free)
        ok = sum(lab[u] for u in free) == obs_free
        for img in shared:
            members = [u for u in units if len(u) == 1 and images[key.index(u)] == img]
            ok = ok and sum(lab[u] for u in members) == sum(side[key.index(u)] for u in members)
        if ok:
            out.append(rows)
    return out


DESIGNS = {
    "boxes": (
        Design.from_boxes([(1, "a", 2), (2, "b", 1), (3, "c", 3)], [(4, "d", 2), (5, "e", 1)]),
        "box",
    ),
    "images": (
        Design.from_boxes(
            [(1, "a", 2), (2, "a", 1), (3, "b", 2), (4, "c", 1)],
            [(5, "d", 2), (6, "e", 1), (7, "e", 2)],
        ),
        "image",
    ),
    "shared": (
        Design.from_boxes(
            [(1, "s", 1), (2, "s", 2), (3, "a", 1), (4, "b", 2)],
            [(5, "s", 1), (6, "t", 1), (7, "c", 2), (8, "t", 1), (9, "s", 1)],
        ),
        "image",
    ),
}


@pytest.mark.parametrize("name", sorted(DESIGNS))
def test_enumeration_equals_brute_force(name: str) -> None:
    design, unit = DESIGNS[name]
    plan = scheme(design)
    assert plan.unit == unit
    brute = _brute(design, unit)
    exact, count, batches = assignment_batches(plan, permutations=10**6, seed=0)
    got = [tuple(r) for b in batches for r in plan.rows_of(b).tolist()]
    assert exact and count == len(brute) == count_assignments(plan)
    assert sorted(got) == sorted(brute) and len(set(got)) == len(got)


@pytest.mark.parametrize("name", sorted(DESIGNS))
def test_exact_p_value_equals_a_naive_loop(name: str) -> None:
    design, _ = DESIGNS[name]
    g = torch.Generator().manual_seed(3)
    nx, ny = design.n_rows
    x = torch.randn(nx, 3, generator=g, dtype=torch.float64) + 0.7
    y = torch.randn(ny, 3, generator=g, dtype=torch.float64)
    z = torch.cat([x, y])
    null = []
    for rows in _brute(design, scheme(design).unit):
        r = torch.tensor(rows)
        null.append(_mean_gap(z[r], z[~r]))
    stat = _mean_gap(x, y)
    expected = sum(v >= stat * (1 - 1e-9) for v in null) / len(null)
    res = permutation_test(_mean_gap, x, y, design, permutations=10**6, alpha=0.5)
    assert res.exact and res.permutations == len(null)
    assert res.statistic == stat
    assert sorted(res.null.tolist()) == pytest.approx(sorted(null), rel=1e-12)
    assert res.p_value == pytest.approx(expected, abs=1e-15)
    assert res.min_p == pytest.approx(sum(v >= max(null) * (1 - 1e-9) for v in null) / len(null))


def test_four_vs_four_images_attain_two_in_seventy() -> None:
    design = Design.from_boxes(
        [(b, f"i{b // 3}", 1) for b in range(12)],
        [(b, f"i{b // 3}", 1) for b in range(12, 24)],
    )
    g = torch.Generator().manual_seed(0)
    x = torch.randn(12, 4, generator=g, dtype=torch.float64) + 3
    y = torch.randn(12, 4, generator=g, dtype=torch.float64)
    res = permutation_test(_mean_gap, x, y, design, permutations=999)
    assert (res.unit, res.n_units, res.exact, res.permutations) == ("image", (4, 4), True, 70)
    assert res.min_p == pytest.approx(2 / 70)
    assert res.p_value == pytest.approx(2 / 70)


@pytest.mark.parametrize("fast", [False, True])
def test_float32_rows_keep_the_mirror_tie_of_an_exact_test(fast: bool) -> None:
    design = Design.from_boxes(
        [(b, b // 2, 3) for b in range(8)], [(b, b // 2, 3) for b in range(8, 16)]
    )
    g = torch.Generator().manual_seed(2)
    x = torch.randn(24, 50, generator=g) + 0.4
    y = torch.randn(24, 50, generator=g)
    res = permutation_test(
        lambda a, b: mmd(a, b), x, y, design, permutations=100, mmd_options={} if fast else None
    )
    assert res.exact and res.permutations == 70
    assert res.min_p == pytest.approx(2 / 70) and res.p_value == pytest.approx(2 / 70)


def test_random_draws_beyond_the_count_and_their_p_formula() -> None:
    design = Design.independent(9, 8)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(9, 2, generator=g, dtype=torch.float64)
    y = torch.randn(8, 2, generator=g, dtype=torch.float64)
    res = permutation_test(_mean_gap, x, y, design, permutations=199, seed=4)
    assert not res.exact and res.permutations == 199 and res.null.numel() == 199
    hits = int((res.null >= res.statistic * (1 - 1e-9)).sum())
    assert res.p_value == (1 + hits) / 200
    assert res.min_p == 1 / 200
    again = permutation_test(_mean_gap, x, y, design, permutations=199, seed=4)
    assert torch.equal(again.null, res.null)
    # Every draw keeps 9 rows in x.
    plan = scheme(design)
    _, _, batches = assignment_batches(plan, permutations=50, seed=2)
    assert all(int(r.sum()) == 9 for b in batches for r in b)


def test_too_few_images_give_no_p_value_and_say_how_many_to_add() -> None:
    design = Design.from_boxes([(1, "a", 2), (2, "a", 2)], [(3, "b", 2), (4, "c", 1)])
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, generator=g, dtype=torch.float64)
    y = torch.randn(3, 3, generator=g, dtype=torch.float64)
    res = permutation_test(_mean_gap, x, y, design, permutations=100)
    assert res.exact and res.permutations == 3 and res.p_value is None
    assert res.min_p == pytest.approx(1 / 3)
    # 3 vs 4 images: 1/C(7, 3) = 1/35 ≤ 0.05; 2 vs 3 gives 1/10.
    assert any(
        "1 vs 2 images" in w and "0.333 > 0.05" in w and "add at least 2 more" in w
        for w in res.warnings
    ), res.warnings
    assert fewest_more_units(1, 2, 0.05) == 2
    assert 1 / math.comb(7, 3) <= 0.05 < 1 / math.comb(5, 2)


def test_single_image_groups_and_forced_box_units_are_flagged() -> None:
    design = Design.from_boxes([(b, "a", 1) for b in range(5)], [(b, "b", 1) for b in range(5, 10)])
    x = torch.arange(15, dtype=torch.float64).reshape(5, 3)
    y = x.flip(0) + 0.5
    res = permutation_test(_mean_gap, x, y, design, permutations=10, unit="box")
    assert res.unit == "box" and res.n_units == (5, 5)
    assert any("compares images, not labels" in w for w in res.warnings)
    assert any("forced" in w for w in res.warnings)


def test_cancellation_raises_interrupted_error() -> None:
    design = Design.independent(6, 6)
    x = torch.randn(6, 2, dtype=torch.float64)
    with pytest.raises(InterruptedError, match="cancelled"):
        permutation_test(_mean_gap, x, x + 1, design, permutations=50, cancelled=lambda: True)
