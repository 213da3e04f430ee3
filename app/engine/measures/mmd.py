"""Gaussian-kernel maximum mean discrepancy (MMD²) between two sets of vectors."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated, ClassVar, Literal

import torch
from pydantic import Field
from torch import Tensor

from app.engine.measures._kernels import (
    MEDIAN_ROWS,
    Kernel,
    block_sums,
    mean_pair_sqdist,
    median_of,
    median_sqdist,
    median_subset,
    pair_kernel,
    sigmas_list,
    sqdist_matrix,
    upper_values,
)
from app.engine.measures.base import Measure, MeasureOptions, Resampler, register

__all__ = [
    "MMD",
    "RESAMPLED_ROWS",
    "BlockSize",
    "Estimator",
    "KernelKind",
    "KernelMul",
    "KernelNum",
    "MMDOptions",
    "make_kernel",
    "mmd",
    "mmd_from_sums",
]

Estimator = Literal["biased", "unbiased", "linear"]
KernelKind = Literal["gaussian", "multi"]
_BLOCK = 1024
RESAMPLED_ROWS = 4096
"""Pooled rows up to which a bootstrap's resamples of MMD gather their squared distances
from one matrix computed once (``RESAMPLED_ROWS²`` float64: 128 MiB)."""

# Bounds that keep the work and memory of one call bounded: a Gram block is
# block_size² values (8192² float64 = 512 MiB at most), each bandwidth is one pass.
Sigma = Annotated[float, Field(gt=0, allow_inf_nan=False)]
KernelMul = Annotated[
    float,
    Field(
        gt=1,
        le=16,
        description=("Ratio of successive bandwidths of the multi-kernel family, in (1, 16]."),
    ),
]
KernelNum = Annotated[
    int, Field(ge=1, le=16, description=("Number of bandwidths of the multi-kernel family, 1..16."))
]
BlockSize = Annotated[
    int,
    Field(
        ge=1, le=8192, description=("Rows per Gram block (memory is block_size² values), 1..8192.")
    ),
]


class MMDOptions(MeasureOptions):
    """Options of :class:`MMD` (see :func:`mmd`)."""

    estimator: Estimator = Field("biased", description="V-statistic, U-statistic or linear.")
    sigma: Sigma | Annotated[list[Sigma], Field(min_length=1, max_length=16)] | None = Field(
        None, description="Bandwidth(s) > 0; none: the median heuristic."
    )
    kernel: KernelKind = Field(
        "gaussian",
        description="One bandwidth (or a list averaged), or the seed/DAN multi-kernel family.",
    )
    kernel_mul: KernelMul = 2.0
    kernel_num: KernelNum = 5
    block_size: BlockSize = _BLOCK
    median_seed: int = Field(
        0,
        ge=0,
        le=2**31 - 1,
        description=("Seed of the median heuristic's 1,024-row subset (larger inputs only)."),
    )


def make_kernel(
    z: Tensor,
    *,
    sigma: float | Sequence[float] | None,
    kernel: KernelKind,
    kernel_mul: float,
    kernel_num: int,
    seed: int = 0,
) -> Kernel:
    """The kernel :func:`mmd` uses for the pooled rows ``z`` (see :func:`mmd`)."""
    return _kernel(
        lambda: median_sqdist(z, seed=seed),
        lambda: mean_pair_sqdist(z),
        sigma=sigma,
        kernel=kernel,
        kernel_mul=kernel_mul,
        kernel_num=kernel_num,
    )


def _kernel(
    median: Callable[[], float],
    mean: Callable[[], float],
    *,
    sigma: float | Sequence[float] | None,
    kernel: KernelKind,
    kernel_mul: float,
    kernel_num: int,
) -> Kernel:
    """The kernel of :func:`make_kernel`, given the pooled rows' median and mean squared
    distance (over pairs ``i < j`` and ``i ≠ j``), asked for only where needed."""
    if kernel == "gaussian":
        if sigma is None:
            med = median()
            if med == 0:
                med = mean() or 1.0
            return Kernel(scales=(med,), weight=1.0)  # 2σ² with σ² = median/2
        sig = sigmas_list(sigma)
        return Kernel(scales=tuple(2 * s * s for s in sig), weight=1.0 / len(sig))
    if kernel == "multi":
        if kernel_num < 1 or kernel_mul <= 0:
            raise ValueError("kernel_num must be ≥ 1 and kernel_mul > 0")
        if sigma is None:
            centre = mean() or 1.0
        else:
            sig = sigmas_list(sigma)
            if len(sig) != 1:
                raise ValueError("kernel='multi' takes one sigma (the middle bandwidth)")
            centre = 2 * sig[0] ** 2
        base = centre / kernel_mul ** (kernel_num // 2)
        scales = tuple(base * kernel_mul**i for i in range(kernel_num))
        return Kernel(scales=scales, weight=1.0 / kernel_num)
    raise ValueError(f"unknown kernel {kernel!r}; use 'gaussian' or 'multi'")


def mmd_from_sums(
    sxx: float, syy: float, sxy: float, n: int, m: int, at_zero: float, estimator: str
) -> float:
    """MMD² from the kernel sums over ordered pairs (diagonals included)."""
    if estimator == "biased":
        return sxx / n**2 + syy / m**2 - 2 * sxy / (n * m)
    return (
        (sxx - n * at_zero) / (n * (n - 1))
        + (syy - m * at_zero) / (m * (m - 1))
        - 2 * sxy / (n * m)
    )


@register
class MMD(Measure):
    """Gaussian-kernel MMD² between two sets (see :func:`mmd` for the options)."""

    name: ClassVar[str] = "mmd"
    needs = "pixels"
    between = "sets"
    Options = MMDOptions
    options: MMDOptions

    def check_sizes(self, n: int, m: int) -> None:
        """Refuse sizes the estimator cannot use.

        Raises:
            ValueError: fewer than 2 samples on a side for the unbiased or linear estimator.
        """
        estimator = self.options.estimator
        if estimator != "biased" and min(n, m) < 2:
            raise ValueError(f"the {estimator} MMD estimator needs at least 2 samples per side")

    def plug_in(self, x: Tensor, y: Tensor) -> float:
        """The biased (V-statistic) MMD² with these options: a bootstrap resample counts a
        unit drawn twice as two draws, so the unbiased and linear estimators average over
        resamples to the sample's V-statistic, not to their own value."""
        if self.options.estimator == "biased":
            return self(x, y)
        return MMD(**{**self.options.model_dump(), "estimator": "biased"})(x, y)

    def kernel_for(self, z: Tensor) -> Kernel:
        """The kernel of these options for the pooled rows ``z``."""
        o = self.options
        return make_kernel(
            z,
            sigma=o.sigma,
            kernel=o.kernel,
            kernel_mul=o.kernel_mul,
            kernel_num=o.kernel_num,
            seed=o.median_seed,
        )

    def resampled(self, x: Tensor, y: Tensor) -> Resampler | None:
        """Resamples' MMD² from the pooled rows' squared distances, computed once (float64):
        each resample gathers its rows' block of them, takes its own bandwidth as
        :meth:`compute` does (the median over its pairs, of the same seeded subset of
        :data:`~app.engine.measures._kernels.MEDIAN_ROWS` rows above that many, or the
        mean) and sums the kernel. Not for the linear estimator, nor above
        :data:`RESAMPLED_ROWS` pooled rows; a resample of more rows than that (image units
        of unequal size) is computed as usual."""
        if self.options.estimator == "linear" or x.shape[0] + y.shape[0] > RESAMPLED_ROWS:
            return None
        d = sqdist_matrix(torch.cat([x, y]))
        n = x.shape[0]

        def value(i: Tensor, j: Tensor) -> float:
            if len(i) + len(j) > RESAMPLED_ROWS:
                return self(x[i], y[j])
            self.check_sizes(len(i), len(j))
            rows = torch.cat([i, j + n]).to(d.device)
            return self._from_sqdists(d, rows, len(i))

        return value

    def _from_sqdists(self, d: Tensor, rows: Tensor, n: int) -> float:
        """MMD² of the pooled rows ``rows`` (``x``'s ``n`` first) of the rows whose squared
        distances are ``d``."""
        o, total = self.options, len(rows)
        sub = rows
        if total > MEDIAN_ROWS:  # the median heuristic's subset, as median_sqdist takes it
            sub = rows[median_subset(total, o.median_seed).to(rows.device)]
        block = d[rows[:, None], rows]
        k = _kernel(
            lambda: median_of(upper_values(d[sub[:, None], sub])),
            lambda: float(block.sum()) / (total * total - total),
            sigma=o.sigma,
            kernel=o.kernel,
            kernel_mul=o.kernel_mul,
            kernel_num=o.kernel_num,
        )
        g = k.apply_(block)
        sxx, syy, sxy = float(g[:n, :n].sum()), float(g[n:, n:].sum()), float(g[:n, n:].sum())
        return mmd_from_sums(sxx, syy, sxy, n, total - n, k.at_zero, o.estimator)

    def compute(self, x: Tensor, y: Tensor) -> float:
        n, m = x.shape[0], y.shape[0]
        self.check_sizes(n, m)
        estimator, block_size = self.options.estimator, self.options.block_size
        z = torch.cat([x, y])
        k = self.kernel_for(z)
        if estimator == "linear":
            p = min(n, m) // 2
            x1, x2, y1, y2 = x[0 : 2 * p : 2], x[1 : 2 * p : 2], y[0 : 2 * p : 2], y[1 : 2 * p : 2]
            h = (
                pair_kernel(x1, x2, k)
                + pair_kernel(y1, y2, k)
                - pair_kernel(x1, y2, k)
                - pair_kernel(x2, y1, k)
            )
            return float(h.to(torch.float64).mean())
        sxx, syy, sxy = block_sums(z, n, k, block_size)
        return mmd_from_sums(sxx, syy, sxy, n, m, k.at_zero, estimator)


def mmd(
    x: Tensor,
    y: Tensor,
    *,
    estimator: Estimator = "biased",
    sigma: float | Sequence[float] | None = None,
    kernel: KernelKind = "gaussian",
    kernel_mul: float = 2.0,
    kernel_num: int = 5,
    block_size: int = _BLOCK,
    seed: int = 0,
) -> float:
    """Squared maximum mean discrepancy between the rows of ``x`` (``n×d``) and ``y`` (``m×d``).

    Kernel ``k(a, b) = exp(−‖a−b‖² / (2σ²))``. ``sigma=None`` takes the median heuristic
    ``σ = √(median ‖zi−zj‖² / 2)`` over pairs of the pooled rows (a seeded random subset of
    1,024 rows when there are more; the mean if the median is 0); a list of sigmas averages
    the kernels. ``kernel="multi"`` is the seed note's / DAN's family, averaged:
    ``exp(−‖a−b‖²/s_i)`` with ``s_i = c · kernel_mul**(i − kernel_num//2)``, where ``c`` is the
    mean squared distance over pooled pairs ``i ≠ j`` (or ``2σ²`` when ``sigma`` is given).

    Estimators: ``biased`` (V-statistic, ≥ 0); ``unbiased`` (U-statistic: within-set
    diagonals left out; it is unbiased for MMD² and so *can be negative* when the sets come
    from the same distribution); ``linear`` (Gretton et al. 2012, §6: the mean of
    ``k(x₂ᵢ₋₁,x₂ᵢ) + k(y₂ᵢ₋₁,y₂ᵢ) − k(x₂ᵢ₋₁,y₂ᵢ) − k(x₂ᵢ,y₂ᵢ₋₁)`` over ``p = min(n, m) // 2``
    disjoint pairs taken in row order; shuffle ordered data first; can be negative).
    ``n ≠ m`` works for all three. Biased/unbiased run over row blocks of the pooled Gram
    (upper blocks only), so memory is ``O(block_size²)`` beyond the inputs.

    Args:
        x: ``n×d`` samples.
        y: ``m×d`` samples.
        estimator: ``"biased"``, ``"unbiased"`` or ``"linear"``.
        sigma: bandwidth(s), or ``None`` for the median heuristic.
        kernel: ``"gaussian"`` or ``"multi"``.
        kernel_mul: ratio of successive bandwidths for ``"multi"``, in ``(1, 16]``.
        kernel_num: number of bandwidths for ``"multi"`` (1..16).
        block_size: rows per Gram block (1..8192).
        seed: seed of the median heuristic's subset (the option ``median_seed``).

    Returns:
        The MMD² estimate as a float.

    Raises:
        ValueError: bad input, unknown option, or too few samples for the estimator.
    """
    return MMD(
        estimator=estimator,
        sigma=_listed(sigma),
        kernel=kernel,
        kernel_mul=kernel_mul,
        kernel_num=kernel_num,
        block_size=block_size,
        median_seed=seed,
    )(x, y)


def _listed(sigma: float | Sequence[float] | None) -> float | list[float] | None:
    return sigma if sigma is None or isinstance(sigma, int | float) else list(sigma)
