"""Euclidean distance between two group means."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor

from app.engine.measures._squared_gap import SquaredGap
from app.engine.measures.base import Measure, as_samples, register

__all__ = ["Euclidean", "euclidean", "row_distances"]


def row_distances(z: Tensor) -> Tensor:
    """``‖zi − zj‖₂`` for every pair of rows of ``z`` (float64, exact zero diagonal).

    Computed from differences, not from ``‖a‖² + ‖b‖² − 2a·b``, so near rows keep their
    digits.
    """
    z = z.to(torch.float64)
    return torch.cdist(z, z, compute_mode="donot_use_mm_for_euclid_dist").fill_diagonal_(0)


@register
class Euclidean(Measure):
    """``‖mean(x) − mean(y)‖₂`` (one row per side compares two descriptors)."""

    name: ClassVar[str] = "euclidean"
    # ‖x̄−ȳ‖ is biased upwards by about √(tr Σx/n + tr Σy/m): the interval is built on the
    # bias-corrected square (SquaredGap), for the distance between the population means
    interval_scale = SquaredGap()

    def compute(self, x: Tensor, y: Tensor) -> Tensor:
        return (x.mean(0) - y.mean(0)).square().sum().sqrt()

    def pairwise(self, z: Tensor, labels: Sequence[str] | None = None) -> Tensor:
        return row_distances(as_samples(z, "z"))


def euclidean(x: Tensor, y: Tensor) -> float:
    """Euclidean distance between the means of ``x`` (``n×d``) and ``y`` (``m×d``)."""
    return Euclidean()(x, y)
