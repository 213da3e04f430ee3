"""A measure between every pair of groups, with unit-level tests, intervals and adjustment.

Each group is its rows plus the box and image each row came from. One unit is chosen for
the whole matrix (images whenever any image gives several boxes to a group or boxes to
several groups, else boxes), so every pair is tested, bootstrapped and sized the same way;
the family of an adjustment is the matrix's tested pairs. A warning is said once: what
holds for the whole matrix at matrix level, a pair's own warning once for all the pairs it
concerns.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field

from torch import Tensor

from app.engine.inference.adjust import Adjustment, adjust
from app.engine.inference.bootstrap import (
    Interval,
    IntervalMethod,
    bootstrap_interval,
    reaches_zero,
    unit_rows,
)
from app.engine.inference.effective import Effective, effective_of
from app.engine.inference.permutation import SINGLE_IMAGES, permutation_test
from app.engine.inference.units import Design, Unit, unit_for_sides
from app.engine.measures.base import Measure

__all__ = ["Group", "MatrixTests", "PairTest", "matrix_tests"]

FEW_RESAMPLES = 1000
"""Below this many bootstrap resamples a matrix warns that the intervals' ends are noisy."""


@dataclass(frozen=True)
class Group:
    """One group's rows and, per row, the box and image it came from."""

    rows: Tensor
    boxes: tuple[Hashable, ...]
    images: tuple[Hashable, ...]

    def __post_init__(self) -> None:
        n = int(self.rows.shape[0]) if self.rows.ndim else 0
        if not n == len(self.boxes) == len(self.images):
            raise ValueError(f"a group of {n} rows needs {n} box ids and {n} image ids")


@dataclass(frozen=True)
class PairTest:
    """The test of one pair ``(i, j)`` of the matrix (``i < j``)."""

    i: int
    j: int
    statistic: float
    p_value: float | None
    p_adjusted: float | None
    min_p: float
    exact: bool
    permutations: int
    interval: Interval | None
    """``None`` when no interval was asked for or the pair allows none (see the warnings)."""


@dataclass(frozen=True)
class MatrixTests:
    """The matrix, its pairs' tests and what a reader must know to trust them.

    Attributes:
        labels: group names, in the matrix's order.
        values: ``k×k`` float64; distances have 0 on the diagonal, similarities
            ``measure(g, g)``.
        higher_is_better: the measure's direction.
        unit: the unit every test and interval exchanged or resampled.
        tests: one per pair ``i < j`` when tests or intervals were asked for.
        adjustment: how ``p_adjusted`` was formed, over the family of pairs with a p-value.
        effective: per group, its units, rows, ICC and effective sample size.
        warnings: what limits the answer (too few units, one image per group, …).
    """

    labels: list[str]
    values: Tensor
    higher_is_better: bool
    unit: Unit
    tests: list[PairTest]
    adjustment: Adjustment
    effective: dict[str, Effective]
    warnings: list[str] = field(default_factory=list)


def _single_image_warning(groups: Mapping[str, Group]) -> list[str]:
    if all(len(set(g.images)) == 1 for g in groups.values()):
        return [
            "every group's boxes come from a single image: differences between groups "
            "are differences between images, not between labels; put boxes of each "
            "label on several images to compare labels"
        ]
    return []


def matrix_tests(
    groups: Mapping[str, Group],
    measure: Measure,
    *,
    permutations: int = 0,
    bootstrap: int = 0,
    seed: int = 0,
    alpha: float = 0.05,
    unit: Unit | None = None,
    adjustment: Adjustment = "holm",
    interval_method: IntervalMethod | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> MatrixTests:
    """``measure`` between every pair of groups, with tests and intervals over units.

    Args:
        groups: name → rows with their boxes and images (at least 2 groups, one ``d``).
        measure: a configured measure (``m(x, y) -> float``).
        permutations: when > 0, a permutation test per pair exchanging whole units (exact
            when the distinct assignments are at most this many).
        bootstrap: when > 0, a 95% interval per pair from this many resamples of units
            within each group (a pair with a group of fewer than 2 units gets none).
        seed: seed of the draws and resamples (every pair uses it).
        alpha: the level below which the smallest attainable p-value must lie for a test.
        unit: ``"image"`` or ``"box"``; ``None`` chooses over all groups (see
            :func:`app.engine.inference.units.choose_unit`).
        adjustment: ``"holm"`` (family-wise error) or ``"bh"`` (false discovery rate).
        interval_method: ``"studentized"``, ``"bca"`` or ``"percentile"`` (see
            :func:`app.engine.inference.bootstrap.bootstrap_interval`); ``None``: the
            measure's own :attr:`~app.engine.measures.base.Measure.interval_method`.
        cancelled: polled between pairs and inside each test.

    Returns:
        The :class:`MatrixTests`.

    Raises:
        ValueError: fewer than 2 groups, bad rows or options.
        InterruptedError: ``cancelled()`` turned true.
    """
    labels = list(groups)
    if len(labels) < 2:
        raise ValueError(f"a matrix needs at least 2 groups, got {len(labels)}")
    chosen = unit_for_sides([(g.boxes, g.images) for g in groups.values()], unit)
    single = _single_image_warning(groups)
    warnings = list(single)
    if 0 < bootstrap < FEW_RESAMPLES and measure.interval_refusal is None:
        warnings.append(
            f"the intervals rest on {bootstrap} bootstrap resamples, so their ends are "
            f"noisy; ask for at least {FEW_RESAMPLES}"
        )
    values = measure.pairwise_sets([groups[label].rows for label in labels])
    tests: list[PairTest] = []
    notes: list[tuple[str, str]] = []
    if permutations > 0 or bootstrap > 0:
        tests = _pair_tests(
            groups,
            labels,
            measure,
            values,
            permutations,
            bootstrap,
            seed,
            alpha,
            chosen,
            adjustment,
            interval_method or measure.interval_method,
            cancelled,
            notes,
        )
        for t in tests:  # the tests' statistics, computed in float64 on the same rows
            values[t.i, t.j] = values[t.j, t.i] = t.statistic
    effective = {
        name: effective_of(g.rows, unit_rows(g.boxes, g.images, chosen))
        for name, g in groups.items()
    }
    return MatrixTests(
        labels,
        values,
        measure.higher_is_better,
        chosen,
        tests,
        adjustment,
        effective,
        list(dict.fromkeys(warnings + _pair_warnings(notes, len(tests), bool(single)))),
    )


def _pair_warnings(notes: list[tuple[str, str]], pairs: int, single_images: bool) -> list[str]:
    """Each pair warning once, naming the pairs it concerns (``every pair`` when all of
    several, the first five and a count past five); a pair's single-image warning goes when
    the matrix already says it of every group."""
    concerns: dict[str, list[str]] = {}
    for pair, text in notes:
        if not (single_images and text == SINGLE_IMAGES):
            concerns.setdefault(text, []).append(pair)

    def named(who: list[str]) -> str:
        if len(who) == pairs > 1:
            return "every pair"
        more = f" and {len(who) - 5} more pairs" if len(who) > 5 else ""
        return ", ".join(who[:5]) + more

    return [f"{named(who)}: {text}" for text, who in concerns.items()]


def _pair_tests(
    groups: Mapping[str, Group],
    labels: list[str],
    measure: Measure,
    values: Tensor,
    permutations: int,
    bootstrap: int,
    seed: int,
    alpha: float,
    unit: Unit,
    adjustment: Adjustment,
    interval_method: IntervalMethod,
    cancelled: Callable[[], bool] | None,
    notes: list[tuple[str, str]],
) -> list[PairTest]:
    """Every pair's test and interval (``values``: the matrix, for pairs not permuted),
    p-values adjusted over the pairs; adds ``(pair, warning)`` of the tests and intervals
    to ``notes``."""
    raw: list[tuple[int, int, float, float | None, float, bool, int, Interval | None]] = []
    for i, j in itertools.combinations(range(len(labels)), 2):
        if cancelled is not None and cancelled():
            raise InterruptedError("cancelled")
        a, b = groups[labels[i]], groups[labels[j]]
        name = f"{labels[i]} vs {labels[j]}"
        pair = (measure, a.rows, b.rows, Design(a.boxes, a.images, b.boxes, b.images))
        stat, p, min_p, exact, drawn = float(values[i, j]), None, 1.0, False, 0
        if permutations > 0:
            result = permutation_test(
                *pair,
                permutations=permutations,
                seed=seed,
                larger_is_extreme=not measure.higher_is_better,
                alpha=alpha,
                unit=unit,
                cancelled=cancelled,
            )
            stat, p, min_p = result.statistic, result.p_value, result.min_p
            exact, drawn = result.exact, result.permutations
            notes += [(name, w) for w in result.warnings]
        interval = None
        if bootstrap > 0:
            interval = _interval(
                pair, bootstrap, seed, unit, interval_method, cancelled, name, notes
            )
            scale = measure.interval_scale
            if interval is not None and scale is not None:
                if not interval.low <= stat <= interval.high:  # say what the interval is for
                    notes.append((name, scale.note))
        raw.append((i, j, stat, p, min_p, exact, drawn, interval))
    adjusted = adjust([r[3] for r in raw], adjustment)
    return [
        PairTest(i, j, stat, p, q, min_p, exact, drawn, interval)
        for (i, j, stat, p, min_p, exact, drawn, interval), q in zip(raw, adjusted, strict=True)
    ]


def _interval(
    pair: tuple[Measure, Tensor, Tensor, Design],
    resamples: int,
    seed: int,
    unit: Unit,
    method: IntervalMethod,
    cancelled: Callable[[], bool] | None,
    name: str,
    notes: list[tuple[str, str]],
) -> Interval | None:
    """The pair's interval (``pair``: measure, rows and design), or ``None`` with a note
    saying why there is none."""
    if pair[0].interval_refusal is not None:
        notes.append((name, f"no interval: {pair[0].interval_refusal}"))
        return None
    try:
        interval = bootstrap_interval(
            *pair,
            resamples=resamples,
            seed=seed,
            unit=unit,
            method=method,
            plug_in=pair[0].plug_in,
            scale=pair[0].interval_scale,
            cancelled=cancelled,
        )
    except ValueError as error:  # too few units, a statistic failing without one unit
        notes.append((name, f"no interval: {error}"))
        return None
    if math.isnan(interval.low):
        notes.append(
            (
                name,
                "no BCa interval: the observed value lies outside every resample, a bias "
                "the resamples cannot correct; use method 'studentized' (the default)",
            )
        )
        return None
    at_zero = reaches_zero(interval)
    if at_zero is not None:
        notes.append((name, at_zero))
    return interval
