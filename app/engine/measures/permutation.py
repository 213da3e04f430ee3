"""Permutation tests of "x and y come from the same distribution" for any measure."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from app.engine.measures._kernels import kernel_matrix
from app.engine.measures.base import MEASURES, Measure, as_samples, get_measure
from app.engine.measures.mmd import make_kernel, mmd_from_sums

__all__ = ["PermutationResult", "permutation_test"]

_MAX_CACHED = 12_000  # pooled rows whose kernel matrix is kept in memory (≈0.6 GB float32)


@dataclass(frozen=True)
class PermutationResult:
    """A permutation test's outcome; ``p_value = (1 + #{null ≥ statistic}) / (1 + P)``
    (``≤`` for measures where higher means more alike)."""

    statistic: float
    p_value: float
    permutations: int
    null: Tensor


def _labels(n: int, total: int, permutations: int, seed: int, device: torch.device) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    idx = torch.stack([torch.randperm(total, generator=g)[:n] for _ in range(permutations)])
    a = torch.zeros(total, permutations)
    a.scatter_(0, idx.T, 1.0)
    return a.to(device)


def _mmd_null(
    x: Tensor, y: Tensor, permutations: int, seed: int, options: dict[str, Any]
) -> tuple[float, Tensor]:
    """Kernel matrix once; each permutation is then ``aᵀKa`` for its 0/1 x-indicator ``a``."""
    estimator = options.get("estimator", "biased")
    n, m = x.shape[0], y.shape[0]
    z = torch.cat([x, y])
    k = make_kernel(
        z, sigma=options.get("sigma"), kernel=options.get("kernel", "gaussian"),
        kernel_mul=options.get("kernel_mul", 2.0), kernel_num=options.get("kernel_num", 5),
        seed=options.get("seed", 0),
    )
    km = kernel_matrix(z, k, options.get("block_size", 2048))
    rows = km.sum(1, dtype=torch.float64)
    total = float(rows.sum())
    a_obs = torch.zeros(n + m, 1, dtype=km.dtype, device=km.device)
    a_obs[:n] = 1
    a = torch.cat([a_obs, _labels(n, n + m, permutations, seed, km.device).to(km.dtype)], 1)
    # aᵀKa per column; chunks of columns bound the memory of K·A.
    q = torch.empty(a.shape[1], dtype=torch.float64)
    step = max(1, (1 << 26) // (n + m))
    for c0 in range(0, a.shape[1], step):
        ac = a[:, c0 : c0 + step]
        q[c0 : c0 + ac.shape[1]] = ((km @ ac) * ac).sum(0, dtype=torch.float64).cpu()
    ar = (a.to(torch.float64).T @ rows.to(a.device)).cpu()  # aᵀK1
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
    measure: str | Callable[[Tensor, Tensor], float],
    x: Tensor,
    y: Tensor,
    *,
    permutations: int = 1000,
    seed: int = 0,
    **options: Any,
) -> PermutationResult:
    """Test whether ``x`` and ``y`` differ under ``measure`` by permuting the pooled rows.

    Each of ``permutations`` seeded draws splits the pooled rows into sizes ``n`` and ``m``
    and recomputes the measure. For ``"mmd"`` (biased or unbiased) the pooled kernel matrix
    is computed once (for up to 12,000 pooled rows) and every permutation is a quadratic
    form in it; other measures are recomputed per draw. The p-value counts draws at least as
    extreme as the observed value: ``≥`` for distances and callables, ``≤`` for measures
    with ``higher_is_better`` (similarities).

    Args:
        measure: a registered measure name or a function ``f(x, y) -> float``.
        x: ``n×d`` samples.
        y: ``m×d`` samples.
        permutations: number of random splits (≥ 1).
        seed: seed of the splits (same seed, same result).
        **options: keywords for the measure.

    Returns:
        The statistic, p-value, number of permutations and the null values.

    Raises:
        ValueError: bad input or ``permutations < 1``. KeyError: unknown measure name.
    """
    if permutations < 1:
        raise ValueError(f"permutations must be at least 1, got {permutations}")
    x, y = as_samples(x, "x"), as_samples(y, "y")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y have different feature sizes ({x.shape[1]} vs {y.shape[1]})")
    dtype = torch.promote_types(x.dtype, y.dtype)
    x, y = x.to(dtype), y.to(dtype)
    fn: Callable[..., float]
    larger_is_extreme = True
    if isinstance(measure, str):
        inst: Measure = get_measure(measure)
        larger_is_extreme = not MEASURES[measure].higher_is_better
        fast = (
            measure == "mmd"
            and options.get("estimator", "biased") in ("biased", "unbiased")
            and x.shape[0] + y.shape[0] <= _MAX_CACHED
        )
        if fast:
            inst(x, y, **options)  # validates inputs and options the same way
            stat, null = _mmd_null(x, y, permutations, seed, options)
            return _result(stat, null, permutations, larger_is_extreme)
        fn = inst
    else:
        fn = measure
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
