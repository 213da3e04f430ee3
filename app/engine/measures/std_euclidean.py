"""Standardised Euclidean distance between two group means."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor

from app.engine.measures._squared_gap import SquaredGap
from app.engine.measures.base import Measure, as_samples, register
from app.engine.measures.euclidean import row_distances

__all__ = ["StdEuclidean", "std_euclidean"]


@register
class StdEuclidean(Measure):
    """Euclidean distance of the means after dividing each feature by its pooled std.

    The variance is taken over the pooled rows of ``x`` and ``y`` with ``ddof=1`` (what
    scipy's ``cdist(..., "seuclidean")`` uses by default). A feature that is constant over
    the pooled rows has the same value in both means and is left out. :meth:`pairwise`
    takes the variance over all rows of ``z``.
    """

    name: ClassVar[str] = "std_euclidean"
    # the same bias as euclidean's, on standardised features: see SquaredGap
    interval_scale = SquaredGap(standardise=True)

    def compute(self, x: Tensor, y: Tensor) -> Tensor:
        pooled = torch.cat([x, y])
        if pooled.shape[0] < 2:
            raise ValueError("std_euclidean needs at least 2 samples in x and y together")
        var = pooled.var(0, correction=1)
        keep = var > 0
        diff = (x.mean(0) - y.mean(0))[keep]
        return (diff.square() / var[keep]).sum().sqrt()

    def pairwise(self, z: Tensor, labels: Sequence[str] | None = None) -> Tensor:
        z = as_samples(z, "z").to(torch.float64)
        if z.shape[0] < 2:
            return torch.zeros(z.shape[0], z.shape[0], dtype=torch.float64)
        var = z.var(0, correction=1)
        keep = var > 0
        return row_distances(z[:, keep] / var[keep].sqrt())


def std_euclidean(x: Tensor, y: Tensor) -> float:
    """Standardised Euclidean distance between the means of ``x`` and ``y`` (scipy's
    ``seuclidean`` with the pooled per-feature variance)."""
    return StdEuclidean()(x, y)
