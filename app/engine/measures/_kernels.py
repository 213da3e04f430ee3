"""Gaussian kernel sums over the pooled Gram, in row blocks (never an n×n×d tensor)."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "Kernel",
    "block_sums",
    "mean_pair_sqdist",
    "median_sqdist",
    "pair_kernel",
    "sigmas_list",
    "upper_pairs",
]


@dataclass(frozen=True)
class Kernel:
    """``weight · Σ_s exp(−‖a−b‖² / s)`` over the ``scales`` (``s = 2σ²`` for a Gaussian)."""

    scales: tuple[float, ...]
    weight: float

    @property
    def at_zero(self) -> float:
        """The kernel's value for identical points."""
        return self.weight * len(self.scales)

    def _doubling(self) -> bool:
        s = sorted(self.scales, reverse=True)
        return all(math.isclose(a / b, 2.0, rel_tol=1e-12) for a, b in zip(s, s[1:], strict=False))

    def apply_(self, d: Tensor) -> Tensor:
        """Kernel values of the squared distances ``d`` (``d`` is overwritten)."""
        scales = sorted(self.scales, reverse=True)
        if len(scales) == 1:
            return d.mul_(-1.0 / scales[0]).exp_().mul_(self.weight)
        if self._doubling():
            # Scales halve one after another: exp(-d/(s/2)) = exp(-d/s)², so one exp and
            # squarings give every kernel.
            e = d.mul_(-1.0 / scales[0]).exp_()
            acc = e.clone()
            for _ in scales[1:]:
                acc.add_(e.square_())
            return acc.mul_(self.weight)
        acc = torch.zeros_like(d)
        for s in scales:
            acc.add_(torch.exp(d / -s))
        return acc.mul_(self.weight)

    def sum_(self, d: Tensor) -> float:
        """``Σ`` of the kernel values of ``d`` in float64 (``d`` is overwritten); with
        doubling scales each power is summed as it is made, with no accumulator matrix."""
        scales = sorted(self.scales, reverse=True)
        if len(scales) > 1 and self._doubling():
            e = d.mul_(-1.0 / scales[0]).exp_()
            total = float(e.sum(dtype=torch.float64))
            for _ in scales[1:]:
                total += float(e.square_().sum(dtype=torch.float64))
            return total * self.weight
        return float(self.apply_(d).sum(dtype=torch.float64))


def _sqdist(a: Tensor, b: Tensor, sa: Tensor, sb: Tensor) -> Tensor:
    d = torch.addmm(sa[:, None], a, b.T, alpha=-2.0)
    return d.add_(sb[None, :]).clamp_(min=0)


def _blocks(n: int, total: int, size: int) -> list[tuple[int, int]]:
    # Blocks never straddle the x/y boundary, so each block pair is all XX, YY or XY.
    edges = [*range(0, n, size), *range(n, total, size), total]
    return [(a, b) for a, b in zip(edges, edges[1:], strict=False) if b > a]


def _upper_dists(
    z: Tensor, n: int, block_size: int
) -> Iterator[tuple[tuple[int, int], tuple[int, int], Tensor]]:
    sq = z.square().sum(1)
    blocks = _blocks(n, z.shape[0], block_size)
    for bi, (i0, i1) in enumerate(blocks):
        for j0, j1 in blocks[bi:]:
            d = _sqdist(z[i0:i1], z[j0:j1], sq[i0:i1], sq[j0:j1])
            if i0 == j0:
                d.fill_diagonal_(0)  # exact k(0) on the diagonal, whatever the rounding
            yield (i0, i1), (j0, j1), d


def upper_pairs(
    z: Tensor, n: int, kernel: Kernel, block_size: int
) -> Iterator[tuple[tuple[int, int], tuple[int, int], Tensor]]:
    """Kernel blocks ``K[i0:i1, j0:j1]`` of the upper block triangle of the pooled Gram."""
    for rows, cols, d in _upper_dists(z, n, block_size):
        yield rows, cols, kernel.apply_(d)


def block_sums(z: Tensor, n: int, kernel: Kernel, block_size: int) -> tuple[float, float, float]:
    """``(Σ K_xx, Σ K_yy, Σ K_xy)`` over all ordered pairs (diagonals included) of the pooled
    rows ``z`` (x is ``z[:n]``), computing only the upper block triangle of the Gram."""
    sums = [0.0, 0.0, 0.0]
    for (i0, _), (j0, _), d in _upper_dists(z, n, block_size):
        s = kernel.sum_(d)
        if i0 < n and j0 < n:
            sums[0] += s if i0 == j0 else 2 * s
        elif i0 >= n:
            sums[1] += s if i0 == j0 else 2 * s
        else:
            sums[2] += s
    return sums[0], sums[1], sums[2]


def pair_kernel(a: Tensor, b: Tensor, kernel: Kernel) -> Tensor:
    """Kernel values of corresponding rows of ``a`` and ``b``."""
    return kernel.apply_((a - b).square().sum(1))


def mean_pair_sqdist(z: Tensor, *, chunk: int = 8192) -> float:
    """Mean ``‖zi−zj‖²`` over ordered pairs ``i ≠ j``: ``2n Σ‖zi − μ‖² / (n² − n)``.

    No Gram and no float64 copy of ``z``: the sum runs over row chunks.
    """
    n = z.shape[0]
    mu = z.sum(0, dtype=torch.float64) / n
    acc = 0.0
    for i in range(0, n, chunk):
        acc += float((z[i : i + chunk].to(torch.float64) - mu).square().sum())
    return 2 * n * acc / (n * n - n)


def median_sqdist(z: Tensor, *, max_rows: int = 1024, seed: int = 0) -> float:
    """Median of ``‖zi−zj‖²`` over pairs ``i < j`` of the rows of ``z``.

    Above ``max_rows`` rows a seeded random subset of ``max_rows`` rows is used.
    """
    if z.shape[0] > max_rows:
        g = torch.Generator().manual_seed(seed)
        z = z[torch.randperm(z.shape[0], generator=g)[:max_rows].to(z.device)]
    z64 = z.to(torch.float64)
    sq = z64.square().sum(1)
    d = _sqdist(z64, z64, sq, sq)
    iu = torch.triu_indices(z.shape[0], z.shape[0], offset=1)
    v = d[iu[0], iu[1]]
    # numpy's median: the middle value, or the mean of the two middle ones (kthvalue is a
    # selection, cheaper than the sort behind quantile).
    lo = float(torch.kthvalue(v, (v.numel() + 1) // 2).values)
    hi = float(torch.kthvalue(v, v.numel() // 2 + 1).values)
    return (lo + hi) / 2


def sigmas_list(sigma: float | Sequence[float]) -> list[float]:
    """Sigmas as a checked list."""
    out = [float(sigma)] if isinstance(sigma, int | float) else [float(s) for s in sigma]
    if not out or any(not (s > 0 and math.isfinite(s)) for s in out):
        raise ValueError(f"sigma must be a positive number or a non-empty list of them: {sigma}")
    return out
