"""Permutation tests between two groups that move whole units, exact when splits are few."""

from __future__ import annotations

import functools
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
from app.engine.measures.mmd import MMD, make_kernel

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
_FULL_KERNEL_ROWS = 4096  # elements up to which U is kept whole (128 MiB in float64)
_UNIT_BLOCK = 512  # rows of U per product in a batch's quadratic forms
_KERNEL_BLOCK = 1024  # rows per kernel block while U is built (a multiple of _UNIT_BLOCK)
_BFLOAT16_FROM = 512  # elements from which random draws' products may run in bfloat16
_MARGIN_SAMPLE = 32  # draws of the first batch computed both ways to bound the fast error


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
    return torch.cat([x, y])


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
    """MMD² of many assignments as quadratic forms in the unit-level kernel sums.

    Rows of an element (a unit) always move together, so the pooled kernel matrix is
    reduced once to ``U[e, f] = Σ K_ij`` over rows ``i`` of element ``e`` and ``j`` of
    ``f`` (``E×E``; a box's 16 ``pixels`` rows shrink it 256-fold). For an element
    indicator ``a``: ``Σ K_xx = aᵀUa``, ``Σ K_xy = aᵀU1 − aᵀUa`` and ``Σ K_yy = 1ᵀU1 −
    2aᵀU1 + aᵀUa``. The bandwidth comes from the pooled rows, which no assignment changes.

    ``aᵀUa`` runs on the doubly centred ``C = U − r1ᵀ − 1rᵀ + μ11ᵀ`` (``r`` the row
    means, ``μ`` their mean): ``aᵀUa = aᵀCa + 2(aᵀr)(1ᵀa) − μ(1ᵀa)²``, the last two terms
    exact in float64. ``C`` holds only what tells elements apart, entries a hundred times
    smaller than ``U``'s, so its products lose far less to rounding: on 2×2,000 rows of
    512 the statistic from float32 products of ``C`` errs by 4·10⁻⁶ of the null's spread,
    from those of ``U`` by 6·10⁻³. Only the upper block triangle of ``C`` is kept, as row
    blocks ``[C_II, 2C_I,>I]`` (an off-diagonal block stands for its transpose): a batch
    of assignments is one product per row block.

    With ``dtype`` below the rows' precision (bfloat16: a quarter of float32's time, and
    an error up to 3·10⁻² of the null's spread, mostly from rounding each product's output)
    the forms are kept in both: the observed statistic comes from the precise ones, and
    every draw whose fast value lies within a margin of it (an eighth of the null's spread,
    or ten times the largest error seen on a sample of the first batch) is recomputed
    precisely, so the p-value is the precise one. Above ``_FULL_KERNEL_ROWS`` elements
    ``U`` is not kept: the row-level kernel is walked in blocks for every batch.
    """

    def __init__(
        self, z: Tensor, options: Mapping[str, Any], plan: Scheme, dtype: torch.dtype
    ) -> None:
        self.z, self.plan = z, plan
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
        element = plan.row_element.to(z.device)
        self.elements = len(plan.element_sides)
        self.counts = torch.bincount(element, minlength=self.elements).to(torch.float64)
        self.precise: list[Tensor] = []  # forms in z's dtype
        self.fast: list[Tensor] = []  # forms in a lower dtype, when asked for
        if self.elements <= _FULL_KERNEL_ROWS:
            upper, self.rows = self._upper_sums(element)
            self.means, self.grand = self._centre_(upper, dtype)
        else:
            self.rows = torch.zeros(total_rows, dtype=torch.float64, device=z.device)
            for (i0, i1), (j0, j1), kij in upper_pairs(z, total_rows, self.kernel, _KERNEL_BLOCK):
                self.rows[i0:i1] += kij.sum(1).to(torch.float64)
                if i0 != j0:
                    self.rows[j0:j1] += kij.sum(0).to(torch.float64)
        self.total = float(self.rows.sum())
        self.observed = float(self.values(plan.observed[None])[0])
        self.margin: float | None = None

    def _spans(self) -> list[tuple[int, int]]:
        e = self.elements
        return [(i0, min(i0 + _UNIT_BLOCK, e)) for i0 in range(0, e, _UNIT_BLOCK)]

    def _upper_sums(self, element: Tensor) -> tuple[list[Tensor], Tensor]:
        """Row blocks ``U[i0:i1, i0:]`` of the unit sums (``z``'s dtype) and the row sums
        of ``U`` (float64)."""
        z, e = self.z, self.elements
        spans = self._spans()
        if e == z.shape[0] and bool((element == torch.arange(e, device=z.device)).all()):
            # One row per element: U is the kernel; its blocks land in place.
            # The kernel comes in blocks of _KERNEL_BLOCK rows (as large as one MMD's, so as
            # few elementwise passes), each cut into the forms' row blocks.
            rows = torch.zeros(e, dtype=torch.float64, device=z.device)
            upper = [z.new_empty(i1 - i0, e - i0) for i0, i1 in spans]
            for (i0, i1), (j0, j1), kij in upper_pairs(z, e, self.kernel, _KERNEL_BLOCK):
                for f0 in range(i0, i1, _UNIT_BLOCK):
                    f1, c0 = min(f0 + _UNIT_BLOCK, i1), max(j0, f0)
                    upper[f0 // _UNIT_BLOCK][:, c0 - f0 : j1 - f0] = kij[
                        f0 - i0 : f1 - i0, c0 - j0 :
                    ]
                rows[i0:i1] += kij.sum(1).to(torch.float64)
                if i0 != j0:
                    rows[j0:j1] += kij.sum(0).to(torch.float64)
            return upper, rows
        full = torch.zeros(e, e, dtype=z.dtype, device=z.device)
        for (i0, i1), (j0, j1), kij in upper_pairs(z, z.shape[0], self.kernel, _KERNEL_BLOCK):
            for (r0, r1), (c0, c1), block in (
                ((i0, i1), (j0, j1), kij),
                ((j0, j1), (i0, i1), kij.T),
            ):
                part = torch.zeros(r1 - r0, e, dtype=z.dtype, device=z.device)
                part.index_add_(1, element[c0:c1], block)
                full.index_add_(0, element[r0:r1], part)
                if i0 == j0:
                    break  # a diagonal block is its own transpose
        return [full[i0:i1, i0:].clone() for i0, i1 in spans], full.sum(1, dtype=torch.float64)

    def _centre_(self, upper: list[Tensor], dtype: torch.dtype) -> tuple[Tensor, float]:
        """Fill the forms from the row blocks of ``U`` (centred in place); return the row
        means and their mean that the centring used, in float64."""
        means = (self.rows / self.elements).to(self.z.dtype)
        grand = means.to(torch.float64).mean().to(self.z.dtype)
        for (i0, i1), block in zip(self._spans(), upper, strict=True):
            block.sub_(means[i0:i1, None]).sub_(means[None, i0:]).add_(grand)
            block[:, i1 - i0 :] *= 2.0  # exact in every dtype
            self.precise.append(block)
            if dtype != block.dtype:
                self.fast.append(block.to(dtype))
        return means.to(torch.float64), float(grand)

    def _quadratic(self, elements: Tensor, a64: Tensor, forms: list[Tensor]) -> Tensor:
        """``aᵀUa`` for every row ``a`` of ``elements`` (``batch × elements`` indicators;
        ``a64`` the same in float64), in float64: ``aᵀCa`` by row blocks, ``Σ_I a_Iᵀ [C_II,
        2C_I,>I] a_≥I``, plus the centring's exact terms."""
        a = elements.to(device=self.z.device, dtype=forms[0].dtype).T  # elements × batch
        q = torch.zeros(a.shape[1], dtype=torch.float64, device=a.device)
        for (i0, i1), form in zip(self._spans(), forms, strict=True):
            q += (form @ a[i0:]).mul_(a[i0:i1]).sum(0, dtype=torch.float64)
        picked = a64.sum(1)
        return q + 2 * (a64 @ self.means) * picked - self.grand * picked**2

    def values(self, elements: Tensor, *, fast: bool = False) -> Tensor:
        """MMD² of each assignment (``batch × elements`` indicators, ``True`` = ``x``), from
        the fast forms when asked and kept, else from the precise ones."""
        total_rows = self.z.shape[0]
        if self.precise:
            a64 = elements.to(device=self.z.device, dtype=torch.float64)
            q = self._quadratic(elements, a64, self.fast if fast and self.fast else self.precise)
            ar, n = a64 @ self.rows, a64 @ self.counts
        else:
            rows = self.plan.rows_of(elements)
            a = rows.T.to(self.z.dtype).to(self.z.device)  # rows × batch
            q = torch.zeros(a.shape[1], dtype=torch.float64, device=self.z.device)
            for (i0, i1), (j0, j1), kij in upper_pairs(
                self.z, total_rows, self.kernel, _KERNEL_BLOCK
            ):
                w = 1.0 if i0 == j0 else 2.0  # an off-diagonal block stands for its transpose
                q += w * ((kij @ a[j0:j1]) * a[i0:i1]).sum(0).to(torch.float64)
            a64 = rows.to(torch.float64).to(self.z.device)
            ar, n = a64 @ self.rows, a64.sum(1)
        m = total_rows - n
        if self.estimator == "unbiased" and bool((torch.minimum(n, m) < 2).any()):
            raise ValueError(
                "the unbiased MMD estimator needs at least 2 rows per side "
                "in every assignment; use the biased one"
            )
        sxx, sxy, syy = q, ar - q, self.total - 2 * ar + q
        at_zero = self.kernel.at_zero
        if self.estimator == "biased":
            out = sxx / n**2 + syy / m**2 - 2 * sxy / (n * m)
        else:
            out = (sxx - n * at_zero) / (n * (n - 1)) + (syy - m * at_zero) / (m * (m - 1))
            out = out - 2 * sxy / (n * m)
        return out.cpu()

    def __call__(self, elements: Tensor) -> Tensor:
        """The null's values for a batch of assignments: fast, and precise wherever the
        fast value could rank on the other side of the observed statistic."""
        if not self.fast:
            return self.values(elements)
        out = self.values(elements, fast=True)
        near = torch.zeros_like(out, dtype=torch.bool)
        if self.margin is None:
            # The first batch sets the margin: a sample of it is computed both ways.
            k = min(_MARGIN_SAMPLE, out.numel())
            precise = self.values(elements[:k])
            error = float((out[:k] - precise).abs().max())
            spread = float(out.std()) if out.numel() > 1 else math.inf
            self.margin = max(spread / 8, 10 * error)
            out[:k] = precise
            near[k:] = (out[k:] - self.observed).abs() <= self.margin
        else:
            near = (out - self.observed).abs() <= self.margin
        if bool(near.any()):
            out[near] = self.values(elements[near.to(elements.device)])
        return out


@functools.cache
def _native_bfloat16() -> bool:
    """Whether this CPU multiplies bfloat16 matrices in hardware (AVX512-BF16 or AMX-BF16);
    elsewhere bfloat16 products are emulated and slower than float32 ones."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as info:
            flags = next((line for line in info if line.startswith("flags")), "")
    except OSError:
        return False
    native = bool({"avx512_bf16", "amx_bf16"} & set(flags.split()))
    # oneDNN runs those products: without it torch's own bfloat16 kernel is the slow one.
    return native and bool(torch._C._has_mkldnn)


def _product_dtype(z: Tensor, elements: int, low: bool) -> torch.dtype:
    """The dtype of the quadratic forms' products: float64 unless ``low``; then bfloat16
    on a CPU that multiplies it natively, once there are enough elements to pay for it
    (four times float32's speed, with centred sums as precise as float32 ones of the
    uncentred), and ``z``'s own dtype otherwise."""
    if not low:
        return torch.float64
    if z.device.type == "cpu" and elements >= _BFLOAT16_FROM and _native_bfloat16():
        return torch.bfloat16
    return z.dtype


def _slow(
    statistic: Statistic, z: Tensor, plan: Scheme, cancelled: Callable[[], bool] | None
) -> Callable[[Tensor], Tensor]:
    def evaluate(elements: Tensor) -> Tensor:
        rows = plan.rows_of(elements).to(z.device)
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
    pooled kernel matrix is computed once and reduced to sums over pairs of units, and
    every assignment is a quadratic form of its unit indicator (biased and unbiased
    estimators). Random draws then take the kernel in the rows' precision and the forms'
    products in bfloat16 where the CPU multiplies it natively (from 512 units on; draws
    near the observed statistic are recomputed in the rows' precision, so the p-value is
    that of the precise statistic) or else in the rows' precision; exact enumeration runs
    in float64 throughout. A subclass of ``MMD`` that overrides ``compute`` is called once
    on the observed groups to check the fast path; if they disagree (options it could not
    see) the test falls back to calling ``statistic`` for every assignment.

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
    pooled = _pooled(x, y, design)
    # The statistic and the general path work in float64: an assignment and its mirror
    # must give the same value to within the tie tolerance, or exact tests lose the ties
    # that set their attainable level.
    z = pooled.to(torch.float64)
    plan = scheme(design, unit)
    n_x = design.n_rows[0]
    exact, count, batches = assignment_batches(plan, permutations=permutations, seed=seed)
    options = _mmd_options(statistic, mmd_options)
    # An MMD whose computation is MMD's own, or options given outright, need no check of
    # the fast path against a call of the statistic.
    trusted = mmd_options is not None or (
        isinstance(statistic, MMD) and type(statistic).compute is MMD.compute
    )
    evaluate: Callable[[Tensor], Tensor] | None = None
    observed = math.nan
    if options is not None:
        # Random draws from many assignments meet the observed one or its mirror with a
        # negligible chance, so they may run in lower precision (float32 kernels are two
        # to three times faster, bfloat16 products of the centred sums four times faster
        # than float32 ones); the observed statistic comes from the same products as its
        # null, so the p-value is that of one statistic. Exact enumeration and checks stay
        # in float64.
        low = trusted and not exact
        rows = pooled if low else z
        fast = _MMDNull(rows, options, plan, _product_dtype(rows, len(plan.element_sides), low))
        first = fast.observed
        if trusted:
            observed, evaluate = first, fast
        else:
            observed = float(statistic(z[:n_x], z[n_x:]))
            if math.isclose(first, observed, rel_tol=1e-6, abs_tol=1e-12):
                observed, evaluate = first, fast
    else:
        observed = float(statistic(z[:n_x], z[n_x:]))
    if evaluate is None:
        evaluate = _slow(statistic, z, plan, cancelled)
    null = _run(evaluate, batches, cancelled)
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
    batches: Iterator[Tensor],
    cancelled: Callable[[], bool] | None,
) -> Tensor:
    parts: list[Tensor] = []
    for elements in batches:
        if cancelled is not None and cancelled():
            raise InterruptedError("cancelled")
        parts.append(evaluate(elements))
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
