"""Euclidean distance between two group means."""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from app.engine.measures.base import Measure, register

__all__ = ["Euclidean", "euclidean"]


@register
class Euclidean(Measure):
    """``‖mean(x) − mean(y)‖₂`` (one row per side compares two descriptors)."""

    name: ClassVar[str] = "euclidean"

    def compute(self, x: Tensor, y: Tensor) -> Tensor:  # type: ignore[override]
        return (x.mean(0) - y.mean(0)).square().sum().sqrt()


def euclidean(x: Tensor, y: Tensor) -> float:
    """Euclidean distance between the means of ``x`` (``n×d``) and ``y`` (``m×d``)."""
    return Euclidean()(x, y)
