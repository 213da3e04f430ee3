"""Bootstrap intervals that resample whole units within each group: studentized, BCa or
percentile.

Distances between groups (MMD², a distance between group means, …) are biased under
resampling with replacement: a resample repeats some units and drops others, which moves
the statistic systematically (for a distance ≥ 0, mostly upwards), so the plain percentile
interval sits too high and covers the truth too rarely. The bias-corrected and accelerated
(BCa) interval (Efron 1987; Efron & Tibshirani 1993, §14.3 and eq. 15.36) shifts the
quantile levels by the bootstrap's median bias ``z0`` and by its skewness, the acceleration
``a``, estimated by a jackknife that leaves one *unit* out within its group.

BCa corrects the bias to first order only, and at small groups it reaches for extreme
quantiles of the resamples (a median bias of 0.7 standard errors sends a 95% interval's
lower end to the 0.03% quantile, beyond what 1000 resamples resolve): measured over 300
replicates it covered 0.76–0.91 where it says 0.95 (benchmarks/calibration.py). The
studentized interval (bootstrap-t; Davison & Hinkley 1997, §5.2.1) takes the quantiles of
``t* = (θ* − θ(F̂)) / se*`` instead, each resample's standard error ``se*`` from an inner
bootstrap of that resample's units: the pivot carries the bias and the skewness, so the
quantiles it needs are the ordinary 2.5% and 97.5%. ``θ(F̂)`` is the statistic's value with
the sample taken as the population: the statistic itself for a plug-in estimate (a distance
between means, the V-statistic MMD²), the V-statistic for a U-statistic (a resample's
unbiased MMD² counts a unit drawn twice as two draws, so its expectation over resamples is
the V-statistic of the sample, not the U-statistic).

A pivot cannot fix a statistic whose bias dwarfs its spread: ``‖x̄−ȳ‖`` sits about
``√(tr Σx/n + tr Σy/m)`` above the distance between the population means, and with a true
gap of 0 its studentized interval excluded 0 in 57% of simulated pairs in 16 dimensions
and in all of them in 256. A measure therefore may name another scale
(:attr:`app.engine.measures.base.Measure.interval_scale`): the Euclidean measures build
their interval on the bias-corrected ``‖x̄−ȳ‖² − s²x/n − s²y/m`` (unit-level ``s²``) and
map it back by ``√max(0, ·)``; it covered 0 in 99.7–100% of those pairs and a real gap in
95% (benchmarks/calibration.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from typing import Literal, NamedTuple

import torch
from torch import Tensor

from app.engine.inference.permutation import Statistic
from app.engine.inference.units import Design, Unit, choose_unit
from app.engine.measures.base import IntervalScale, Measure, Resampler

__all__ = [
    "INNER_RESAMPLES",
    "INTERVAL_METHODS",
    "Interval",
    "IntervalMethod",
    "bca_levels",
    "bootstrap_interval",
    "evaluations",
    "reaches_zero",
    "jackknife",
    "unit_rows",
]

IntervalMethod = Literal["studentized", "bca", "percentile"]
INTERVAL_METHODS: tuple[IntervalMethod, ...] = ("studentized", "bca", "percentile")

INNER_RESAMPLES = 25
"""Inner resamples per resample for the studentized interval's standard error (Efron &
Tibshirani 1993, §6.4: 25–200 estimate a standard error; the pivot divides by it, so its
noise widens the t quantiles a little rather than biasing them)."""


class Interval(NamedTuple):
    """A bootstrap interval and what it rests on.

    Attributes:
        low: lower end (NaN when BCa is undefined: see :func:`bca_levels`).
        high: upper end (NaN likewise).
        resamples: resamples on which the statistic could be computed.
        method: ``"studentized"``, ``"bca"`` or ``"percentile"``.
        level: the interval's nominal coverage.
    """

    low: float
    high: float
    resamples: int
    method: IntervalMethod
    level: float


def unit_rows(boxes: Sequence[Hashable], images: Sequence[Hashable], unit: Unit) -> list[Tensor]:
    """Row indices of each unit of one side (an image's boxes in this group, or one box),
    in order of first appearance."""
    keys = images if unit == "image" else boxes
    groups: dict[Hashable, list[int]] = {}
    for row, key in enumerate(keys):
        groups.setdefault(key, []).append(row)
    return [torch.tensor(r, dtype=torch.long) for r in groups.values()]


def _rows(units: list[Tensor], pick: Sequence[int]) -> Tensor:
    return torch.cat([units[i] for i in pick])


def _gather(units: list[Tensor], device: torch.device) -> Callable[[Tensor], Tensor]:
    """Rows of the drawn units, on ``device``: one indexing when every unit has as many rows
    (the studentized interval gathers rows ``1 + inner`` times a resample)."""
    if len({len(u) for u in units}) == 1:
        table = torch.stack(units).to(device)
        return lambda pick: table[pick].reshape(-1)
    return lambda pick: torch.cat([units[i] for i in pick.tolist()]).to(device)


def jackknife(
    statistic: Statistic,
    x: Tensor,
    y: Tensor,
    units: tuple[list[Tensor], list[Tensor]],
    cancelled: Callable[[], bool] | None = None,
) -> tuple[Tensor, Tensor]:
    """``statistic`` with each unit of ``x`` left out, then with each unit of ``y`` left out.

    Args:
        statistic: any ``f(x, y) -> float``.
        x: rows of the first group.
        y: rows of the second group.
        units: the row indices of every unit of ``x`` and of ``y`` (:func:`unit_rows`).
        cancelled: polled before every evaluation.

    Returns:
        Two float64 vectors: one value per unit of ``x``, one per unit of ``y``.

    Raises:
        ValueError: a side with fewer than 2 units, or a statistic that fails without one
            unit (named).
        InterruptedError: ``cancelled()`` turned true.
    """
    out: list[Tensor] = []
    for side, own in enumerate(units):
        if len(own) < 2:
            raise ValueError(f"a jackknife needs at least 2 units per side, got {len(own)}")
        values: list[float] = []
        for left_out in range(len(own)):
            if cancelled is not None and cancelled():
                raise InterruptedError("cancelled")
            kept = _rows(own, [i for i in range(len(own)) if i != left_out])
            a, b = (x[kept.to(x.device)], y) if side == 0 else (x, y[kept.to(y.device)])
            try:
                values.append(float(statistic(a, b)))
            except ValueError as error:
                raise ValueError(
                    f"the statistic fails without unit {left_out} of group "
                    f"{'xy'[side]} ({error}); BCa needs it on every leave-one-unit-out "
                    "sample: add units or use method 'percentile'"
                ) from error
        out.append(torch.tensor(values, dtype=torch.float64))
    return out[0], out[1]


def bca_levels(
    values: Tensor, observed: float, jackknifed: Sequence[Tensor], level: float
) -> tuple[float, float]:
    """The quantile levels of a BCa interval (those of the percentile interval, moved).

    ``z0 = Φ⁻¹(p)`` with ``p`` the share of resampled values below ``observed`` (ties count
    half); the acceleration over the groups' jackknife values ``θ_gi`` (``n_g`` each) is
    ``a = Σ_g Σ_i U³/n_g³ / (6 (Σ_g Σ_i U²/n_g²)^{3/2})`` with ``U = (n_g − 1)(θ̄_g − θ_gi)``
    (``a = 0`` when every ``U`` is 0); a level ``α`` becomes ``Φ(z0 + (z0 + z_α)/(1 −
    a(z0 + z_α)))``. These are scipy's ``bootstrap(method="BCa")`` formulas, with units in
    place of observations.

    Args:
        values: the resampled statistics.
        observed: the statistic on the data.
        jackknifed: per group, the statistic with each of its units left out.
        level: coverage, in ``(0, 1)``.

    Returns:
        ``(lower level, upper level)`` in ``[0, 1]``; both NaN when ``observed`` lies below
        or above every resample (``z0`` infinite: the bias is beyond what the resamples
        resolve).
    """
    v = values.to(torch.float64)
    below = int((v < observed).sum()) + int((v <= observed).sum())
    z0 = torch.special.ndtri(torch.tensor(below / (2 * v.numel()), dtype=torch.float64))
    if not math.isfinite(float(z0)):
        return math.nan, math.nan
    num = torch.zeros((), dtype=torch.float64)
    den = torch.zeros((), dtype=torch.float64)
    for theta in jackknifed:
        n = float(theta.numel())
        u = (n - 1) * (theta.to(torch.float64).mean() - theta.to(torch.float64))
        num = num + (u**3).sum() / n**3
        den = den + (u**2).sum() / n**2
    a = 0.0 if float(den) == 0 else float(num / (6 * den**1.5))
    z = torch.special.ndtri(torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64))
    shifted = torch.special.ndtr(z0 + (z0 + z) / (1 - a * (z0 + z)))
    low, high = shifted.tolist()
    return low, high


def _draws(counts: tuple[int, int], resamples: int, seed: int) -> list[tuple[list[int], list[int]]]:
    g = torch.Generator().manual_seed(seed)
    return [
        (
            torch.randint(counts[0], (counts[0],), generator=g).tolist(),
            torch.randint(counts[1], (counts[1],), generator=g).tolist(),
        )
        for _ in range(resamples)
    ]


AT_ZERO = (
    "the interval reaches 0, the edge of the measure's range (no gap), where no bootstrap "
    "interval holds its stated level: simulated with a true gap of 0 (300 pairs each, "
    "benchmarks/calibration.py), the studentized interval covered 0 in 99.7% (MMD², "
    "biased) and 100% (unbiased) of them, not 95%, and the Euclidean measures' interval "
    "(on the bias-corrected squared distance) in 99.7–100% (16 and 256 dimensions); BCa "
    "0–57%, percentile 0–89%. Read it as 'no clear gap at this sample size', and ask the "
    "permutation test (permutations > 0) whether there is one"
)
"""The warning of an interval whose lower end reaches 0 (:func:`reaches_zero`)."""


def reaches_zero(interval: Interval) -> str | None:
    """:data:`AT_ZERO` for an interval whose lower end reaches 0, else ``None``.

    Every measure here is 0 when the groups do not differ and above 0 otherwise, so a true
    value of 0 sits at the edge of its range, where bootstrap intervals are not consistent
    and their coverage is not their level, in either direction. An interval reaching 0 may
    be there, and the answer says so rather than promise 95%. (The converse needs a
    statistic whose bias is small beside its spread: an interval on ‖x̄−ȳ‖ itself, biased
    far above it in many dimensions, cleared 0 in 57% (16 dimensions) to 100% (256) of the
    simulated pairs with no gap, so the Euclidean measures build theirs on the
    bias-corrected square, :attr:`~app.engine.measures.base.Measure.interval_scale`.)
    """
    return AT_ZERO if interval.low <= 0 else None


def evaluations(method: IntervalMethod, resamples: int, inner: int = INNER_RESAMPLES) -> int:
    """Evaluations of the statistic an interval of ``resamples`` resamples costs, for budgets
    (BCa's jackknife, one per unit, is left out: it is small beside the resamples)."""
    return resamples * (1 + inner) if method == "studentized" else resamples


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
    method: IntervalMethod = "studentized",
    draws: Sequence[tuple[Sequence[int], Sequence[int]]] | None = None,
    inner: int = INNER_RESAMPLES,
    plug_in: Statistic | None = None,
    scale: IntervalScale | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> Interval:
    """Interval of ``statistic(x, y)`` from a bootstrap over units: studentized, BCa or
    percentile.

    Each resample draws, within each group separately, as many units as the group has,
    with replacement (a unit is the rows of one image within that group, or of one box;
    see :func:`app.engine.inference.units.choose_unit`), and recomputes the statistic on
    the rows of the drawn units. ``"percentile"`` takes the ``(1 ± level)/2`` quantiles of
    the resampled values (linear interpolation); ``"bca"`` takes the quantiles at the levels
    :func:`bca_levels` moves them to, from the resamples' bias and a jackknife that leaves
    one unit out within its group; ``"studentized"`` (the default) draws ``inner``
    resamples of each resample's own units for its standard error ``se*``, and answers
    ``[θ̂ − t*₍₁₊ₗ₎/₂ · se, θ̂ − t*₍₁₋ₗ₎/₂ · se]`` with ``t* = (θ* − plug_in(x, y)) / se*``
    and ``se`` the resamples' standard deviation. Resamples on which the statistic raises
    ``ValueError`` (e.g. a Grassmann subspace that collapses when one unit is drawn every
    time) are skipped and not counted, and so (studentized) are those whose inner
    resamples give fewer than 2 values or no spread.

    Args:
        statistic: any ``f(x, y) -> float``.
        x: ``n×d`` rows of the first group.
        y: ``m×d`` rows of the second group.
        design: box and image of every row.
        resamples: number of bootstrap resamples (≥ 1), when ``draws`` is ``None``.
        seed: seed of the resampling (and of the inner resampling).
        level: coverage of the interval, in ``(0, 1)``.
        unit: force ``"box"`` or ``"image"``; ``None`` chooses.
        method: ``"studentized"``, ``"bca"`` or ``"percentile"``.
        draws: the resamples themselves, to replay another tool's: per resample, the
            indices of the units drawn from ``x`` and from ``y`` (units numbered in order
            of first appearance, as :func:`unit_rows` gives them).
        inner: inner resamples per resample (studentized; at least 2).
        plug_in: the statistic with the sample taken as the population, ``θ(F̂)``, the
            centre of the studentized pivot (default ``statistic``; give the V-statistic of
            a U-statistic, see the module's docstring).
        scale: build the interval on this scale instead (a measure's
            :attr:`~app.engine.measures.base.Measure.interval_scale`): each unit becomes one
            row of summaries, ``scale.statistic`` and ``scale.plug_in`` replace
            ``statistic`` and ``plug_in``, and ``scale.back`` maps the ends back.
        cancelled: polled before every evaluation of the statistic.

    Returns:
        The :class:`Interval` (NaN ends when BCa is undefined, see :func:`bca_levels`).

    Raises:
        ValueError: bad arguments, a design that does not match the rows, a group with
            fewer than 2 units (its sampling variation would be left out), a statistic
            that fails on the data or (BCa) without one unit, or on every resample.
        InterruptedError: ``cancelled()`` turned true.
    """
    if method not in INTERVAL_METHODS:
        raise ValueError(f"unknown interval method {method!r}; use one of {list(INTERVAL_METHODS)}")
    if draws is None and resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    if method == "studentized" and inner < 2:
        raise ValueError(f"a studentized interval needs at least 2 inner resamples, got {inner}")
    x, y = design.samples(x, y)
    chosen = choose_unit(design, unit)
    ux = unit_rows(design.x_boxes, design.x_images, chosen)
    uy = unit_rows(design.y_boxes, design.y_images, chosen)
    if min(len(ux), len(uy)) < 2:
        noun = "images" if chosen == "image" else "boxes"
        raise ValueError(
            f"too few {noun} for an interval: {len(ux)} vs {len(uy)}; a bootstrap needs at "
            f"least 2 {noun} per group (with 1 the group's own variation is left out)"
        )
    if scale is not None:
        a, b = scale.summarise(x, y, ux, uy)
        on_scale = bootstrap_interval(
            scale.statistic,
            a,
            b,
            Design.independent(len(ux), len(uy)),
            resamples=resamples,
            seed=seed,
            level=level,
            unit="box",
            method=method,
            draws=draws,
            inner=inner,
            plug_in=scale.plug_in,
            cancelled=cancelled,
        )
        return on_scale._replace(low=scale.back(on_scale.low), high=scale.back(on_scale.high))
    if draws is None:
        draws = _draws((len(ux), len(uy)), resamples, seed)
    if not draws:
        raise ValueError("draws is empty; give at least one resample")

    gx, gy = _gather(ux, x.device), _gather(uy, y.device)
    on_rows = _resampler(statistic, x, y)

    def evaluate(pick_x: Tensor, pick_y: Tensor) -> float | None:
        if cancelled is not None and cancelled():
            raise InterruptedError("cancelled")
        try:
            return float(on_rows(gx(pick_x), gy(pick_y)))
        except ValueError:
            return None

    picks = [
        (torch.as_tensor(px, dtype=torch.long), torch.as_tensor(py, dtype=torch.long))
        for px, py in draws
    ]

    if method == "studentized":
        return _studentized(evaluate, statistic, plug_in, x, y, picks, inner, seed, level)
    found = [evaluate(pick_x, pick_y) for pick_x, pick_y in picks]
    values = [v for v in found if v is not None]
    if not values:
        raise ValueError("the statistic failed on every bootstrap resample; add units")
    v = torch.tensor(values, dtype=torch.float64)
    if method == "percentile":
        levels = ((1 - level) / 2, (1 + level) / 2)
    else:
        observed = float(statistic(x, y))
        levels = bca_levels(v, observed, jackknife(statistic, x, y, (ux, uy), cancelled), level)
    if any(math.isnan(q) for q in levels):
        return Interval(math.nan, math.nan, len(values), method, level)
    low, high = torch.quantile(v, torch.tensor(levels, dtype=torch.float64)).tolist()
    return Interval(low, high, len(values), method, level)


def _resampler(statistic: Statistic, x: Tensor, y: Tensor) -> Resampler:
    """``f(i, j) = statistic(x[i], y[j])``: a measure's own (:meth:`Measure.resampler`,
    which may reuse work done once on ``x`` and ``y``), else a call per resample."""
    if isinstance(statistic, Measure):
        return statistic.resampler(x, y)
    return lambda i, j: statistic(x[i], y[j])


def _studentized(
    evaluate: Callable[[Tensor, Tensor], float | None],
    statistic: Statistic,
    plug_in: Statistic | None,
    x: Tensor,
    y: Tensor,
    draws: Sequence[tuple[Tensor, Tensor]],
    inner: int,
    seed: int,
    level: float,
) -> Interval:
    """The bootstrap-t interval: see :func:`bootstrap_interval`."""
    observed = float(statistic(x, y))
    centre = observed if plug_in is None else float(plug_in(x, y))
    # the inner draws have their own stream, so the outer ones match the other methods'
    g = torch.Generator().manual_seed(seed + 0x5EED)
    values: list[float] = []
    pivots: list[float] = []
    for pick_x, pick_y in draws:
        value = evaluate(pick_x, pick_y)
        if value is None:
            continue
        values.append(value)
        spread: list[float] = []
        for _ in range(inner):
            ix = pick_x[torch.randint(len(pick_x), (len(pick_x),), generator=g)]
            iy = pick_y[torch.randint(len(pick_y), (len(pick_y),), generator=g)]
            found = evaluate(ix, iy)
            if found is not None:
                spread.append(found)
        if len(spread) < 2:
            continue
        se = float(torch.tensor(spread, dtype=torch.float64).std())
        if se > 0 and math.isfinite(se):
            pivots.append((value - centre) / se)
    if len(values) < 2 or not pivots:
        raise ValueError(
            "the statistic failed, or did not vary, on every bootstrap resample's inner "
            "resamples; add units or use method 'percentile'"
        )
    se = float(torch.tensor(values, dtype=torch.float64).std())
    t = torch.tensor(pivots, dtype=torch.float64)
    levels = torch.tensor([(1 + level) / 2, (1 - level) / 2], dtype=torch.float64)
    t_high, t_low = torch.quantile(t, levels).tolist()
    low, high = observed - t_high * se, observed - t_low * se
    return Interval(low, high, len(pivots), "studentized", level)
