"""Training losses for "in-training interpretability": DDC's MMD and DAN's MK-MMD.

Triplet and N-pair losses are not here: use pytorch-metric-learning's, which this
project does not depend on.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from app.engine.measures._kernels import mean_pair_sqdist, median_sqdist
from app.engine.measures.base import as_samples

__all__ = ["MKMMDLoss", "MMDLoss"]


def _sqdist(a: Tensor, b: Tensor) -> Tensor:
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
    return d.clamp_min(0)


def _check(source: Tensor, target: Tensor, min_rows: int) -> None:
    s = as_samples(source, "source", min_rows=min_rows)
    t = as_samples(target, "target", min_rows=min_rows)
    if s.shape[1] != t.shape[1] or source.ndim != 2 or target.ndim != 2:
        raise ValueError(
            f"source and target must be n×d and m×d with one d, got {tuple(source.shape)} "
            f"and {tuple(target.shape)}"
        )


def _estimate(kxx: Tensor, kyy: Tensor, kxy: Tensor, unbiased: bool) -> Tensor:
    n, m = kxx.shape[0], kyy.shape[0]
    if not unbiased:
        return kxx.mean() + kyy.mean() - 2 * kxy.mean()
    return (
        (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
        + (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
        - 2 * kxy.mean()
    )


class MMDLoss(nn.Module):
    """DDC's loss: Gaussian-kernel MMD² between a batch's source and target features.

    ``k(a, b) = exp(−‖a−b‖²/(2σ²))``; ``sigma=None`` takes the median heuristic over the
    pooled batch, detached from the graph (the bandwidth is not trained). Values equal
    :func:`app.engine.measures.mmd` with the same sigma and estimator; ``n ≠ m`` works.

    Args:
        sigma: fixed bandwidth, or ``None`` for the per-batch median heuristic.
        estimator: ``"biased"`` (≥ 0) or ``"unbiased"`` (may be negative).
    """

    def __init__(
        self, sigma: float | None = None, estimator: Literal["biased", "unbiased"] = "biased"
    ) -> None:
        super().__init__()
        if sigma is not None and not sigma > 0:
            raise ValueError(f"sigma must be positive, got {sigma}")
        if estimator not in ("biased", "unbiased"):
            raise ValueError(f"unknown estimator {estimator!r}; use 'biased' or 'unbiased'")
        self.sigma = sigma
        self.estimator = estimator

    def forward(self, source: Tensor, target: Tensor) -> Tensor:
        """MMD² between ``source`` (``n×d``) and ``target`` (``m×d``) as a 0-d tensor."""
        _check(source, target, 2 if self.estimator == "unbiased" else 1)
        pooled = torch.cat([source, target])
        d = _sqdist(pooled, pooled)
        if self.sigma is None:
            # The measure's own median (the mean of the two middle values, numpy's), so the
            # loss and mmd(sigma=None) use one bandwidth.
            z = pooled.detach()
            width = (median_sqdist(z) or mean_pair_sqdist(z) or 1.0) if z.shape[0] > 1 else 1.0
        else:
            width = 2 * self.sigma**2
        k = torch.exp(-d / width)
        n = source.shape[0]
        return _estimate(k[:n, :n], k[n:, n:], k[:n, n:], self.estimator == "unbiased")


class MKMMDLoss(nn.Module):
    """DAN's multi-kernel MMD² (the seed note's kernel family, summed).

    Bandwidths ``b·kernel_mul**(i − kernel_num//2)`` with ``b`` = ``fix_sigma`` or the
    batch's mean squared distance over pairs ``i ≠ j`` (detached, as the note's
    ``L2_distance.data``). Biased estimate ``ΣXX/n² + ΣYY/m² − 2ΣXY/(nm)``, equal to
    :func:`app.engine.measures.seed_mmd` (and to the note's ``mmd`` when ``n = m``).
    """

    def __init__(
        self, kernel_mul: float = 2.0, kernel_num: int = 5, fix_sigma: float | None = None
    ) -> None:
        super().__init__()
        if kernel_num < 1 or not kernel_mul > 0:
            raise ValueError("kernel_num must be ≥ 1 and kernel_mul > 0")
        self.kernel_mul = kernel_mul
        self.kernel_num = kernel_num
        self.fix_sigma = fix_sigma

    def forward(self, source: Tensor, target: Tensor) -> Tensor:
        """MK-MMD² between ``source`` (``n×d``) and ``target`` (``m×d``) as a 0-d tensor."""
        _check(source, target, 1)
        total = torch.cat([source, target])
        d = _sqdist(total, total)
        big_n = total.shape[0]
        if self.fix_sigma:
            width = float(self.fix_sigma)
        else:
            width = float(d.detach().sum()) / max(big_n * big_n - big_n, 1)
        if width <= 0:
            raise ValueError("all features are identical: the bandwidth is 0; set fix_sigma")
        base = width / self.kernel_mul ** (self.kernel_num // 2)
        k = sum(torch.exp(-d / (base * self.kernel_mul**i)) for i in range(self.kernel_num))
        assert isinstance(k, Tensor)
        n = source.shape[0]
        return _estimate(k[:n, :n], k[n:, n:], k[:n, n:], unbiased=False)
