"""Cosine distance between two group means."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor

from app.engine.measures.base import Measure, as_samples, register

__all__ = ["Cosine", "cosine"]


@register
class Cosine(Measure):
    """``1 − a·b / (‖a‖‖b‖)`` of the two means, in ``[0, 2]``; similarity is ``1 − value``."""

    name: ClassVar[str] = "cosine"

    def compute(self, x: Tensor, y: Tensor) -> Tensor:
        a, b = x.mean(0), y.mean(0)
        na, nb = torch.linalg.vector_norm(a), torch.linalg.vector_norm(b)
        if na == 0 or nb == 0:
            raise ValueError(
                "cosine distance is undefined for a zero mean vector; "
                "use euclidean for all-zero descriptors"
            )
        sim: Tensor = (a @ b) / (na * nb)
        return torch.clamp(1 - sim, 0, 2)

    def pairwise(self, z: Tensor, labels: Sequence[str] | None = None) -> Tensor:
        z = as_samples(z, "z").to(torch.float64)
        norms = z.norm(dim=1, keepdim=True)
        if bool((norms == 0).any()):
            raise ValueError("cosine distance is undefined for zero rows; drop them first")
        u = z / norms
        sim: Tensor = u @ u.T
        return torch.clamp(1 - sim, 0, 2).fill_diagonal_(0)


def cosine(x: Tensor, y: Tensor) -> float:
    """Cosine distance between the means of ``x`` and ``y`` (cosine similarity is
    ``1 − cosine(x, y)``)."""
    return Cosine()(x, y)
