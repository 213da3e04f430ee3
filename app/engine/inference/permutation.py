"""Permutation tests between two groups that move whole units, exact when splits are few."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from app.engine.inference.exact import (
    _tolerance,
    assignment_batches,
    count_assignments,
    fewest_more_units,
    smallest_p,
)
from app.engine.inference.units import Design, Scheme, Unit, choose_unit, scheme
from app.engine.measures._kernels import upper_pairs
from app.engine.measures.mmd import MMD, make_kernel, mmd_from_sums

__all__ = ["SINGLE_IMAGES", "Statistic", "TestResult", "permutation_test"]

Statistic = Callable[[Tensor, Tensor], float]
SINGLE_IMAGES = "each group is a single image: this compares images, not labels"
"""The warning of a test whose two groups are one image each (a matrix says it once)."""
_MMD_OPTIONS = {
    "estimator": "biased",
    "sigma": None,
    "kernel": "gaussian",
    "kernel_mul": 2.0,
    "kernel_num": 5,
    "seed": 0,
}
_FULL_KERNEL_ROWS = 4096  # pooled rows up to which K is kept whole (128 MiB in float64)


@dataclass(frozen=True)
class TestResult:
    """A permutation test's outcome.

    Attributes:
        statistic: the statistic of the observed groups.
        p_value: ``(1 + #{null ≥ statistic}) / (1 + P)`` over ``P`` random assignments, or
            ``#{null ≥ statistic} / N`` over all ``N`` assignments (the observed one
            included) when ``exact``; ``≤`` when smaller is more extreme. ``None`` when
            :attr:`min_p` exceeds the test's ``alpha``: no answer is possible.
        min_p: the smallest p-value attainable with these units.
        exact: whether every assignment was evaluated.
        permutations: random draws, or ``N`` when exact.
        unit: ``"box"`` or ``"image"``.
        n_units: units of ``x`` and of ``y``.
        null: the statistic under each evaluated assignment.
        warnings: what a reader must know to trust (or not) the p-value.
    """

    __test__ = False  # not a pytest test class, despite its name

    statistic: float
    p_value: float | None
    min_p: float
    exact: bool
    permutations: int
    unit: Unit
    n_units: tuple[int, int]
    null: Tensor
    warnings: list[str] = field(default_factory=list)


def _pooled(x: Tensor, y: Tensor, design: Design) -> Tensor:
    x, y = design.samples(x, y)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y have different feature sizes ({x.shape[1]} vs {y.shape[1]})")
    # float64 throughout: an assignment and its mirror must give the same value to within
    # the tie tolerance, or exact tests lose the ties that set their attainable level.
    return torch.cat([x, y]).to(torch.float64)


def _mmd_options(statistic: Statistic, given: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if given is not None:
        opts = {**_MMD_OPTIONS, **given}
    elif isinstance(statistic, MMD):
        o = statistic.options
        opts = {
            "estimator": o.estimator,
            "sigma": o.sigma,
            "kernel": o.kernel,
            "kernel_mul": o.kernel_mul,
            "kernel_num": o.kernel_num,
            "seed": o.median_seed,
        }
    else:
        return None
    return opts if opts["estimator"] in ("biased", "unbiased") else None


class _MMDNull:
    """MMD² of many assignments as quadratic forms in the pooled kernel matrix ``K``.

    For a row indicator ``a`` of ``x``: ``Σ K_xx = aᵀKa``, ``Σ K_xy = aᵀK1 − aᵀKa`` and
    ``Σ K_yy = 1ᵀK1 − 2aᵀK1 + aᵀKa``. The bandwidth comes from the pooled rows, which no
    assignment changes; ``K`` is kept whole up to 4,096 pooled rows, above that walked in
    upper blocks for every batch and never stored.
    """

    def __init__(self, z: Tensor, options: Mapping[str, Any]) -> None:
        self.z = z
        self.estimator = str(options["estimator"])
        self.kernel = make_kernel(
            z,
            sigma=options["sigma"],
            kernel=options["kernel"],
            kernel_mul=options["kernel_mul"],
            kernel_num=options["kernel_num"],
            seed=options["seed"],
        )
        total_rows = z.shape[0]
        self.full: Tensor | None = None
        if total_rows <= _FULL_KERNEL_ROWS:
            # Small enough to keep: K once, then every batch is one matrix product.
            self.full = torch.empty(total_rows, total_rows, dtype=z.dtype, device=z.device)
            for (i0, i1), (j0, j1), kij in upper_pairs(z, total_rows, self.kernel, 1024):
                self.full[i0:i1, j0:j1] = kij
                self.full[j0:j1, i0:i1] = kij.T
            self.rows = self.full.sum(1, dtype=torch.float64)
        else:
            self.rows = torch.zeros(total_rows, dtype=torch.float64, device=z.device)
            for (i0, i1), (j0, j1), kij in upper_pairs(z, total_rows, self.kernel, 1024):
                self.rows[i0:i1] += kij.sum(1, dtype=torch.float64)
                if i0 != j0:
                    self.rows[j0:j1] += kij.sum(0, dtype=torch.float64)
        self.total = float(self.rows.sum())

    def __call__(self, rows: Tensor) -> Tensor:
        total_rows = self.z.shape[0]
        a = rows.T.to(self.z.dtype).to(self.z.device)  # rows × batch
        if self.full is not None:
            q = ((self.full @ a) * a).sum(0, dtype=torch.float64)
        else:
            q = torch.zeros(a.shape[1], dtype=torch.float64, device=self.z.device)
            for (i0, i1), (j0, j1), kij in upper_pairs(self.z, total_rows, self.kernel, 1024):
                w = 1.0 if i0 == j0 else 2.0  # an off-diagonal block stands for its transpose
                q += w * ((kij @ a[j0:j1]) * a[i0:i1]).sum(0, dtype=torch.float64)
        ar = a.to(torch.float64).T @ self.rows
        n = rows.sum(1).tolist()
        out = torch.empty(a.shape[1], dtype=torch.float64)
        for i in range(a.shape[1]):
            ni, mi = int(n[i]), total_rows - int(n[i])
            if self.estimator == "unbiased" and min(ni, mi) < 2:
                raise ValueError(
                    "the unbiased MMD estimator needs at least 2 rows per side "
                    "in every assignment; use the biased one"
                )
            sxx, sxy = float(q[i]), float(ar[i] - q[i])
            syy = self.total - 2 * float(ar[i]) + float(q[i])
            out[i] = mmd_from_sums(sxx, syy, sxy, ni, mi, self.kernel.at_zero, self.estimator)
        return out


def _slow(
    statistic: Statistic, z: Tensor, cancelled: Callable[[], bool] | None
) -> Callable[[Tensor], Tensor]:
    def evaluate(rows: Tensor) -> Tensor:
        rows = rows.to(z.device)
        out = torch.empty(rows.shape[0], dtype=torch.float64)
        for i, r in enumerate(rows):
            # One statistic may take milliseconds on wide rows: look at the token each time.
            if cancelled is not None and cancelled():
                raise InterruptedError("cancelled")
            out[i] = float(statistic(z[r], z[~r]))
        return out

    return evaluate


def permutation_test(
    statistic: Statistic,
    x: Tensor,
    y: Tensor,
    design: Design,
    *,
    permutations: int = 1000,
    seed: int = 0,
    larger_is_extreme: bool = True,
    alpha: float = 0.05,
    unit: Unit | None = None,
    mmd_options: Mapping[str, Any] | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> TestResult:
    """Test "``x`` and ``y`` come from one distribution" by exchanging whole units.

    The units and strata come from :func:`app.engine.inference.units.scheme`: rows of a
    unit always move together, images shared by both groups exchange boxes only among
    themselves. When the distinct assignments number at most ``permutations`` all are
    evaluated (``exact``); otherwise ``permutations`` seeded random ones are. The statistic
    may use every row; only the group labels move. Rows are brought to float64 first, so
    that an assignment and its mirror tie under a symmetric statistic.

    MMD fast path: when ``statistic`` is an :class:`app.engine.measures.mmd.MMD` (its
    options read from its attributes, defaults otherwise) or ``mmd_options`` are given, the
    pooled kernel matrix is computed once and every assignment is a quadratic form of its
    row indicator (biased and unbiased estimators). The fast path's observed value is
    checked against ``statistic(x, y)``; if they disagree (options it could not see) the
    test falls back to calling ``statistic`` for every assignment.

    Args:
        statistic: any ``f(x, y) -> float`` (a measure with its options bound).
        x: ``n×d`` rows of the first group.
        y: ``m×d`` rows of the second group.
        design: box and image of every row.
        permutations: the most assignments to evaluate (≥ 1).
        seed: seed of the random assignments.
        larger_is_extreme: ``False`` for similarities (small is extreme).
        alpha: the test's level; below it ``min_p`` must lie for a p-value to be given.
        unit: force ``"box"`` or ``"image"``; ``None`` chooses (see ``choose_unit``).
        mmd_options: MMD options that switch on the fast path for a plain callable.
        cancelled: polled between batches of assignments.

    Returns:
        The :class:`TestResult`.

    Raises:
        ValueError: bad input, a design that does not match the rows, bad ``alpha``.
        InterruptedError: ``cancelled()`` returned ``True`` (the caller maps it to its own
            cancellation).
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    z = _pooled(x, y, design)
    plan = scheme(design, unit)
    n_x = design.n_rows[0]
    observed = float(statistic(z[:n_x], z[n_x:]))
    evaluate = _slow(statistic, z, cancelled)
    options = _mmd_options(statistic, mmd_options)
    if options is not None:
        fast = _MMDNull(z, options)
        first = float(fast(plan.rows_of(plan.observed[None]))[0])
        if mmd_options is not None or math.isclose(first, observed, rel_tol=1e-6, abs_tol=1e-12):
            observed, evaluate = first, fast
    exact, count, batches = assignment_batches(plan, permutations=permutations, seed=seed)
    null = _run(evaluate, plan, batches, cancelled)
    tol = _tolerance(observed)
    hits = (
        int((null >= observed - tol).sum())
        if larger_is_extreme
        else int((null <= observed + tol).sum())
    )
    p = hits / count if exact else (1 + hits) / (1 + count)
    total = count_assignments(plan)
    min_p = smallest_p(
        null, exact=exact, count=count, larger_is_extreme=larger_is_extreme, total=total
    )
    notes = _warnings(design, plan, unit, min_p, alpha, exact, count)
    return TestResult(
        statistic=observed,
        p_value=p if min_p <= alpha else None,
        min_p=min_p,
        exact=exact,
        permutations=count,
        unit=plan.unit,
        n_units=plan.n_units,
        null=null,
        warnings=notes,
    )


def _run(
    evaluate: Callable[[Tensor], Tensor],
    plan: Scheme,
    batches: Iterator[Tensor],
    cancelled: Callable[[], bool] | None,
) -> Tensor:
    parts: list[Tensor] = []
    for elements in batches:
        if cancelled is not None and cancelled():
            raise InterruptedError("cancelled")
        parts.append(evaluate(plan.rows_of(elements)))
    return torch.cat(parts)


def _warnings(
    design: Design,
    plan: Scheme,
    unit: Unit | None,
    min_p: float,
    alpha: float,
    exact: bool,
    count: int,
) -> list[str]:
    notes: list[str] = []
    noun = "images" if plan.unit == "image" else "boxes"
    n, m = plan.n_units
    if min_p > alpha:
        if exact:
            more = fewest_more_units(n, m, alpha)
            notes.append(
                f"too few {noun} for a test: with {n} vs {m} {noun} the smallest attainable "
                f"p is {min_p:.3g} > {alpha:g}; add at least {more} more {noun} per group"
            )
        else:
            notes.append(
                f"too few permutations for a test: with {count} the smallest attainable p "
                f"is {min_p:.3g} > {alpha:g}; ask for at least {math.ceil(1 / alpha) - 1}"
            )
    xi, yi = set(design.x_images), set(design.y_images)
    if len(xi) == 1 and len(yi) == 1 and xi != yi:
        notes.append(SINGLE_IMAGES)
    if unit == "box" and choose_unit(design) == "image":
        notes.append(
            "boxes were forced as the unit although images hold several boxes of a group "
            "or boxes of both groups; boxes of one image are not independent, so the "
            "p-value may be too small"
        )
    return notes
