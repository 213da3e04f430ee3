"""Gaussian kernel sums over the pooled Gram, in row blocks (never an n×n×d tensor)."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "MEDIAN_ROWS",
    "Kernel",
    "block_sums",
    "mean_pair_sqdist",
    "median_of",
    "median_sqdist",
    "median_subset",
    "pair_kernel",
    "sigmas_list",
    "sqdist_matrix",
    "upper_pairs",
    "upper_values",
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


def _sqdist(a: Tensor, b: Tensor, sa: Tensor, sb: Tensor) -> Tensor:
    d = torch.addmm(sa[:, None], a, b.T, alpha=-2.0)
    return d.add_(sb[None, :]).clamp_(min=0)


def _blocks(n: int, total: int, size: int) -> list[tuple[int, int]]:
    # Blocks never straddle the x/y boundary, so each block pair is all XX, YY or XY.
    edges = [*range(0, n, size), *range(n, total, size), total]
    return [(a, b) for a, b in zip(edges, edges[1:], strict=False) if b > a]


# Values per elementwise pass after a block's matrix product: up to 2048² (16 MiB of
# float32, four default blocks; held in the shared L3 cache). Smaller chunks stay in L2 and
# win a little on an idle machine, but every pass is a parallel region whose threads must
# all be scheduled: on a loaded machine ten passes per 256 KiB chunk cost more than the
# matrix product itself (measured on 2 busy cores: 4.3 s vs 9.3 s for 2 x 4,000 rows).
_CHUNK = 1 << 22


def _onednn_product(z: Tensor) -> bool:
    """Whether blocks of ``z`` multiply as a 1×1 convolution (oneDNN) instead of ``mm``.

    On the CPU, float32 ``torch.mm`` is MKL's sgemm, which keeps to its AVX2 kernels on AMD
    processors; oneDNN, behind ``conv2d``, picks its kernels by the CPU's features (AVX-512
    here): 1.3–2× the GFLOP/s of ``mm`` for 1024-row blocks on a 2-core AMD EPYC
    (``bench_measures`` prints both). Same float32 products, summed in another order.
    Without oneDNN, or on one thread, ``conv2d`` falls back to the same sgemm.
    """
    cpu32 = z.device.type == "cpu" and z.dtype == torch.float32
    return cpu32 and bool(torch._C._has_mkldnn) and bool(torch.backends.mkldnn.enabled)


class _Gram:
    """Upper row blocks of ``−‖zi−zj‖² / s`` for the kernel's widest scale ``s``.

    Each block is one matrix product of augmented rows, ``[2zi/s, −‖zi‖²/s, 1] ·
    [zj, 1, −‖zj‖²/s]``: no separate passes to add the norms, nothing of size ``n×m``. The
    column side is laid out transposed (``(d+2)×cols``) once per column block, the row side
    is rebuilt per block from ``z``'s rows.
    """

    def __init__(self, z: Tensor, kernel: Kernel, block_size: int) -> None:
        self.z, self.block_size = z, block_size
        self.top = max(kernel.scales)
        self.sq = z.square().sum(1)
        rows, width = min(block_size, z.shape[0]), z.shape[1] + 2
        self._rows = z.new_empty(rows * width)
        self._columns = z.new_empty(width * rows)
        self._onednn = _onednn_product(z)
        self._out = None if self._onednn else z.new_empty(rows * rows)

    def _row_side(self, i0: int, i1: int) -> Tensor:
        out, s = self._rows[: (i1 - i0) * (self.z.shape[1] + 2)].view(i1 - i0, -1), self.top
        torch.mul(self.z[i0:i1], 2.0 / s, out=out[:, :-2])
        torch.mul(self.sq[i0:i1], -1.0 / s, out=out[:, -2])
        out[:, -1] = 1.0
        return out

    def _column_side(self, j0: int, j1: int) -> Tensor:
        out = self._columns[: (self.z.shape[1] + 2) * (j1 - j0)].view(-1, j1 - j0)
        out[:-2] = self.z[j0:j1].T
        out[-2] = 1.0
        torch.mul(self.sq[j0:j1], -1.0 / self.top, out=out[-1])
        return out

    def _product(self, rows: Tensor, columns: Tensor) -> Tensor:
        if self._onednn:
            # conv2d(x [1, d+2, cols, 1], w [rows, d+2, 1, 1])[0, r, c, 0] = rows[r] · columns[:, c]
            return F.conv2d(columns[None, :, :, None], rows[:, :, None, None])[0, :, :, 0]
        assert self._out is not None
        g = self._out[: rows.shape[0] * columns.shape[1]].view(rows.shape[0], columns.shape[1])
        return torch.mm(rows, columns, out=g)

    def blocks(self, n: int) -> Iterator[tuple[tuple[int, int], tuple[int, int], Tensor]]:
        """``(rows, cols, G)`` over the upper block triangle, column block by column block;
        ``G`` may be overwritten by the next block, and its entries are ``≤ 0`` with exact
        zeros on the diagonal."""
        spans = _blocks(n, self.z.shape[0], self.block_size)
        for bj, (j0, j1) in enumerate(spans):
            columns = self._column_side(j0, j1)
            for i0, i1 in spans[: bj + 1]:
                g = self._product(self._row_side(i0, i1), columns)
                if i0 == j0:
                    g.fill_diagonal_(0)  # exact k(0) on the diagonal, whatever the rounding
                yield (i0, i1), (j0, j1), g.clamp_(max=0)


def _chunks(g: Tensor) -> Iterator[Tensor]:
    step = max(1, _CHUNK // max(1, g.shape[1]))
    for r0 in range(0, g.shape[0], step):
        yield g[r0 : r0 + step]


def _ratios(kernel: Kernel) -> tuple[bool, list[float]]:
    """Whether the scales halve one after another, and ``top / s`` for every scale."""
    top = max(kernel.scales)
    return kernel._doubling(), [top / s for s in sorted(kernel.scales, reverse=True)]


def _values_(g: Tensor, kernel: Kernel) -> Tensor:
    """Kernel values from ``g = −d/top`` (see :class:`_Gram`), in place, chunk by chunk."""
    doubling, ratios = _ratios(kernel)
    tmp = g.new_empty(min(g.numel(), max(_CHUNK, g.shape[1])))
    for c in _chunks(g):
        t = tmp[: c.numel()].view_as(c)
        if len(ratios) == 1:
            c.exp_()
        elif doubling:
            # exp(−d/(s/2)) = exp(−d/s)²: one exp, then squarings give every kernel.
            t.copy_(c.exp_())
            for _ in ratios[1:]:
                c.add_(t.square_())
        else:
            t.copy_(c)
            c.exp_()
            for q in ratios[1:]:
                c.add_(torch.mul(t, q).exp_())
    return g.mul_(kernel.weight)


def _sum_(g: Tensor, kernel: Kernel) -> Tensor:
    """``Σ`` of the kernel values of ``g = −d/top`` as a float64 scalar (``g`` is
    overwritten). Each chunk's sum runs in ``g``'s dtype (pairwise, a few ulps), the chunks
    add up in float64."""
    doubling, ratios = _ratios(kernel)
    total = torch.zeros((), dtype=torch.float64)
    tmp = g.new_empty(min(g.numel(), max(_CHUNK, g.shape[1])))
    for c in _chunks(g):
        if len(ratios) == 1 or doubling:
            total += c.exp_().sum()
            for _ in ratios[1:]:
                total += c.square_().sum()
        else:
            t = tmp[: c.numel()].view_as(c)
            for q in ratios[1:]:
                total += torch.mul(c, q, out=t).exp_().sum()
            total += c.exp_().sum()
    return total * kernel.weight


def upper_pairs(
    z: Tensor, n: int, kernel: Kernel, block_size: int
) -> Iterator[tuple[tuple[int, int], tuple[int, int], Tensor]]:
    """Kernel blocks ``K[i0:i1, j0:j1]`` of the upper block triangle of the pooled Gram
    (``z[:n]`` and ``z[n:]`` never share a block). A yielded block is overwritten by the
    next one: use or copy it before asking for more."""
    for rows, cols, g in _Gram(z, kernel, block_size).blocks(n):
        yield rows, cols, _values_(g, kernel)


def block_sums(z: Tensor, n: int, kernel: Kernel, block_size: int) -> tuple[float, float, float]:
    """``(Σ K_xx, Σ K_yy, Σ K_xy)`` over all ordered pairs (diagonals included) of the pooled
    rows ``z`` (x is ``z[:n]``), computing only the upper block triangle of the Gram.

    Memory beyond ``z``: one ``block_size²`` block and two ``block_size×(d+2)`` row blocks.
    """
    sums = [torch.zeros((), dtype=torch.float64) for _ in range(3)]
    for (i0, _), (j0, _), g in _Gram(z, kernel, block_size).blocks(n):
        s = _sum_(g, kernel)
        if i0 < n and j0 < n:
            sums[0] += s if i0 == j0 else 2 * s
        elif i0 >= n:
            sums[1] += s if i0 == j0 else 2 * s
        else:
            sums[2] += s
    return float(sums[0]), float(sums[1]), float(sums[2])


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


MEDIAN_ROWS = 1024
"""Rows the median heuristic looks at: a seeded random subset of this many above it."""


def median_sqdist(z: Tensor, *, max_rows: int = MEDIAN_ROWS, seed: int = 0) -> float:
    """Median of ``‖zi−zj‖²`` over pairs ``i < j`` of the rows of ``z``.

    Above ``max_rows`` rows a seeded random subset of ``max_rows`` rows is used.
    """
    if z.shape[0] > max_rows:
        z = z[median_subset(z.shape[0], seed, max_rows).to(z.device)]
    return median_of(upper_values(sqdist_matrix(z)))


def upper_values(d: Tensor) -> Tensor:
    """The values above the diagonal of a square matrix (pairs ``i < j``)."""
    upper = torch.triu_indices(d.shape[0], d.shape[0], offset=1, device=d.device)
    return d[upper[0], upper[1]]


def median_subset(rows: int, seed: int, max_rows: int = MEDIAN_ROWS) -> Tensor:
    """The ``max_rows`` of ``rows`` that the median heuristic looks at (seeded)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(rows, generator=g)[:max_rows]


def sqdist_matrix(z: Tensor) -> Tensor:
    """``‖zi−zj‖²`` between every pair of rows of ``z``, in float64 (``n×n``)."""
    z64 = z.to(torch.float64)
    sq = z64.square().sum(1)
    return _sqdist(z64, z64, sq, sq)


def median_of(v: Tensor) -> float:
    """numpy's median of the values ``v``: the middle one, or the mean of the two middle
    ones (``kthvalue`` is a selection, cheaper than the sort behind ``quantile``)."""
    lo = float(torch.kthvalue(v, (v.numel() + 1) // 2).values)
    hi = float(torch.kthvalue(v, v.numel() // 2 + 1).values)
    return (lo + hi) / 2


def sigmas_list(sigma: float | Sequence[float]) -> list[float]:
    """Sigmas as a checked list."""
    out = [float(sigma)] if isinstance(sigma, int | float) else [float(s) for s in sigma]
    if not out or any(not (s > 0 and math.isfinite(s)) for s in out):
        raise ValueError(f"sigma must be a positive number or a non-empty list of them: {sigma}")
    return out
