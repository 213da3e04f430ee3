"""Permutation tests of "x and y come from the same distribution" for any measure."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from app.engine.measures._kernels import upper_pairs
from app.engine.measures.base import Measure, as_samples, get_measure
from app.engine.measures.mmd import MMD, mmd_from_sums

__all__ = ["PermutationResult", "permutation_test"]


@dataclass(frozen=True)
class PermutationResult:
    """A permutation test's outcome; ``p_value = (1 + #{null ≥ statistic}) / (1 + P)``
    (``≤`` for measures where higher means more alike)."""

    statistic: float
    p_value: float
    permutations: int
    null: Tensor


def _labels(n: int, total: int, permutations: int, seed: int) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    idx = torch.stack([torch.randperm(total, generator=g)[:n] for _ in range(permutations)])
    a = torch.zeros(total, permutations)
    a.scatter_(0, idx.T, 1.0)
    return a


def _mmd_null(
    x: Tensor, y: Tensor, permutations: int, seed: int, measure: MMD
) -> tuple[float, Tensor]:
    """One pass over the upper blocks of the pooled kernel matrix ``K``; each permutation
    is then the quadratic form ``aᵀKa`` of its 0/1 x-indicator ``a`` (never stored whole)."""
    estimator = measure.options.estimator
    n, m = x.shape[0], y.shape[0]
    total_rows = n + m
    z = torch.cat([x, y])
    k = measure.kernel_for(z)
    block = min(measure.options.block_size, 1024)
    a_obs = torch.zeros(total_rows, 1)
    a_obs[:n] = 1
    a = torch.cat([a_obs, _labels(n, total_rows, permutations, seed)], 1).to(z.dtype)
    a = a.to(z.device)
    q = torch.zeros(a.shape[1], dtype=torch.float64, device=z.device)
    rows = torch.zeros(total_rows, dtype=torch.float64, device=z.device)
    step = max(1, (1 << 25) // total_rows)  # columns per pass: bounds the memory of A
    for c0 in range(0, a.shape[1], step):
        ac = a[:, c0 : c0 + step]
        part = torch.zeros(ac.shape[1], dtype=torch.float64, device=z.device)
        for (i0, i1), (j0, j1), kij in upper_pairs(z, total_rows, k, block):
            # K is symmetric: an off-diagonal block stands for itself and its transpose.
            w = 1.0 if i0 == j0 else 2.0
            part += w * ((kij @ ac[j0:j1]) * ac[i0:i1]).sum(0, dtype=torch.float64)
            if c0 == 0:
                rows[i0:i1] += kij.sum(1, dtype=torch.float64)
                if i0 != j0:
                    rows[j0:j1] += kij.sum(0, dtype=torch.float64)
        q[c0 : c0 + ac.shape[1]] = part
    total = float(rows.sum())
    ar = (a.to(torch.float64).T @ rows).cpu()  # aᵀK1
    q = q.cpu()
    sxx, sxy = q, ar - q
    syy = total - 2 * ar + q
    stats = torch.tensor(
        [
            mmd_from_sums(float(sxx[i]), float(syy[i]), float(sxy[i]), n, m, k.at_zero, estimator)
            for i in range(a.shape[1])
        ],
        dtype=torch.float64,
    )
    return float(stats[0]), stats[1:]


def permutation_test(
    measure: str | Measure | Callable[[Tensor, Tensor], float],
    x: Tensor,
    y: Tensor,
    *,
    permutations: int = 1000,
    seed: int = 0,
    **options: Any,
) -> PermutationResult:
    """Test whether ``x`` and ``y`` differ under ``measure`` by permuting the pooled rows.

    Each of ``permutations`` seeded draws splits the pooled rows into sizes ``n`` and ``m``
    and recomputes the measure. For MMD (biased or unbiased) the pooled kernel matrix
    is computed once (for up to 12,000 pooled rows) and every permutation is a quadratic
    form in it; other measures are recomputed per draw. The p-value counts draws at least as
    extreme as the observed value: ``≥`` for distances and callables, ``≤`` for measures
    with ``higher_is_better`` (similarities).

    Args:
        measure: a registered measure name (configured with ``options``), a configured
            :class:`Measure`, or a function ``f(x, y, **options) -> float``.
        x: ``n×d`` samples.
        y: ``m×d`` samples.
        permutations: number of random splits (≥ 1).
        seed: seed of the splits (same seed, same result).
        **options: the measure's options (with a name) or keywords of the function.

    Returns:
        The statistic, p-value, number of permutations and the null values.

    Raises:
        ValueError: bad input, bad options or ``permutations < 1``. KeyError: unknown
            measure name.
    """
    if permutations < 1:
        raise ValueError(f"permutations must be at least 1, got {permutations}")
    x, y = as_samples(x, "x"), as_samples(y, "y")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y have different feature sizes ({x.shape[1]} vs {y.shape[1]})")
    dtype = torch.promote_types(x.dtype, y.dtype)
    x, y = x.to(dtype), y.to(dtype)
    if isinstance(measure, str):
        measure = get_measure(measure, **options)
        options = {}
    elif isinstance(measure, Measure) and options:
        raise ValueError(f"{measure.name} is already configured; give its options to "
                         "get_measure, not to permutation_test")
    fn: Callable[..., float] = measure
    larger_is_extreme = True
    if isinstance(measure, Measure):
        larger_is_extreme = not measure.higher_is_better
        if isinstance(measure, MMD) and measure.options.estimator in ("biased", "unbiased"):
            measure.check_sizes(x.shape[0], y.shape[0])
            stat, null = _mmd_null(x, y, permutations, seed, measure)
            return _result(stat, null, permutations, larger_is_extreme)
    stat = float(fn(x, y, **options))
    z = torch.cat([x, y])
    n = x.shape[0]
    g = torch.Generator().manual_seed(seed)
    null = torch.empty(permutations, dtype=torch.float64)
    for i in range(permutations):
        p = torch.randperm(z.shape[0], generator=g).to(z.device)
        null[i] = float(fn(z[p[:n]], z[p[n:]], **options))
    return _result(stat, null, permutations, larger_is_extreme)


def _result(stat: float, null: Tensor, permutations: int, larger: bool) -> PermutationResult:
    # A relative tolerance keeps draws equal to the statistic up to rounding counted as ties.
    tol = 1e-9 * max(abs(stat), 1e-300)
    hits = int((null >= stat - tol).sum()) if larger else int((null <= stat + tol).sum())
    return PermutationResult(
        statistic=stat, p_value=(1 + hits) / (1 + permutations),
        permutations=permutations, null=null,
    )
