"""The seed note's ``mmd()``, exactly, without its n×n×d tensor and for unequal sizes."""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field
from torch import Tensor

from app.engine.measures._kernels import Kernel, block_sums, mean_pair_sqdist
from app.engine.measures.base import Measure, MeasureOptions, register
from app.engine.measures.mmd import BlockSize, KernelMul, KernelNum, mmd_from_sums

__all__ = ["SeedMMD", "SeedMMDOptions", "seed_mmd"]


class SeedMMDOptions(MeasureOptions):
    """Options of :class:`SeedMMD` (the note's keywords; see :func:`seed_mmd`)."""

    kernel_mul: KernelMul = 2.0
    kernel_num: KernelNum = 5
    fix_sigma: float | None = Field(
        None,
        ge=0,
        allow_inf_nan=False,
        description=(
            "The middle bandwidth b (of exp(-d²/b)); none or 0: the mean squared distance."
        ),
    )
    block_size: BlockSize = 1024


@register
class SeedMMD(Measure):
    """The seed note's multi-kernel MMD (a *sum* of ``kernel_num`` kernels)."""

    name: ClassVar[str] = "seed_mmd"
    needs = "pixels"
    between = "sets"
    Options = SeedMMDOptions
    options: SeedMMDOptions

    def compute(self, x: Tensor, y: Tensor) -> float:
        kernel_mul, kernel_num = self.options.kernel_mul, self.options.kernel_num
        fix_sigma, block_size = self.options.fix_sigma, self.options.block_size
        z = torch.cat([x, y])
        if z.shape[0] < 2:
            raise ValueError("seed_mmd needs at least 2 samples in x and y together")
        # The note's `if fix_sigma:` treats 0 like None; so does this.
        bandwidth = float(fix_sigma) if fix_sigma else mean_pair_sqdist(z)
        if bandwidth <= 0:
            raise ValueError("all samples are identical: the seed's bandwidth is 0")
        base = bandwidth / kernel_mul ** (kernel_num // 2)
        k = Kernel(scales=tuple(base * kernel_mul**i for i in range(kernel_num)), weight=1.0)
        sxx, syy, sxy = block_sums(z, x.shape[0], k, block_size)
        return mmd_from_sums(sxx, syy, sxy, x.shape[0], y.shape[0], k.at_zero, "biased")


def seed_mmd(
    x: Tensor,
    y: Tensor,
    kernel_mul: float = 2.0,
    kernel_num: int = 5,
    fix_sigma: float | None = None,
) -> float:
    """The seed note's ``mmd(source, target, kernel_mul, kernel_num, fix_sigma)``.

    Kernel ``Σᵢ exp(−‖a−b‖²/bᵢ)`` (summed, not averaged) with ``bᵢ = b·kernel_mul**i /
    kernel_mul**(kernel_num//2)``, ``b = fix_sigma`` or the mean squared distance over the
    pooled pairs ``i ≠ j``. For ``n = m`` the value is the note's ``mean(XX + YY − XY − YX)``;
    for ``n ≠ m`` (where the note's slicing breaks) it generalises to the biased estimate
    ``ΣXX/n² + ΣYY/m² − 2ΣXY/(nm)``, which equals the note's value when ``n = m``. Computed
    in Gram row blocks, so it scales to sizes where the note's ``n×n×d`` tensor cannot.
    ``kernel_mul`` is in ``(1, 16]`` and ``kernel_num`` in ``1..16``.

    Raises:
        ValueError: bad input, or all samples identical with no ``fix_sigma``.
    """
    return SeedMMD(kernel_mul=kernel_mul, kernel_num=kernel_num, fix_sigma=fix_sigma)(x, y)
