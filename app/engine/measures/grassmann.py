"""Grassmann distances between the principal subspaces of two sets of vectors."""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from torch import Tensor

from app.engine.measures.base import Measure, register

__all__ = ["Grassmann", "GrassmannMetric", "grassmann", "principal_angles"]

GrassmannMetric = Literal["geodesic", "chordal", "projection", "binet_cauchy", "fubini_study"]
_METRICS = ("geodesic", "chordal", "projection", "binet_cauchy", "fubini_study")


def _basis(s: Tensor) -> tuple[Tensor, Tensor, int]:
    centred = s - s.mean(0)
    _, sv, vh = torch.linalg.svd(centred, full_matrices=False)
    tol = sv.max() * max(s.shape) * torch.finfo(s.dtype).eps if sv.numel() else 0.0
    rank = int((sv > tol).sum())
    return vh.T, sv, rank


def _k_for_energy(sv: Tensor, energy: float) -> int:
    share = sv.square().cumsum(0) / sv.square().sum()
    return int((share < energy - 1e-12).sum()) + 1


def principal_angles(x: Tensor, y: Tensor, k: int) -> Tensor:
    """Principal angles (radians, ascending) between the top-``k`` principal subspaces of
    the centred rows of ``x`` and ``y`` (checked inputs)."""
    bx, _, _ = _basis(x)
    by, _, _ = _basis(y)
    cos = torch.linalg.svdvals(bx[:, :k].T @ by[:, :k]).clamp(-1, 1)
    return torch.arccos(cos).flip(0)


@register
class Grassmann(Measure):
    """Distance between the top-``k`` principal subspaces (rows centred) of two sets.

    With ``k=None`` each side takes the fewest directions that explain ``energy`` of its
    variance and both use the larger of the two (capped at the smaller rank). Metrics on
    the principal angles ``θ`` (Hamm & Lee 2008; Edelman et al. 1998): geodesic ``‖θ‖₂``;
    chordal ``‖2 sin(θ/2)‖₂``;
    projection ``‖sin θ‖₂`` (= ``‖P_x − P_y‖_F/√2``); Binet–Cauchy ``√(1 − Π cos²θ)``;
    Fubini–Study ``arccos Π cos θ``.
    """

    name: ClassVar[str] = "grassmann"
    needs = "pixels"
    between = "sets"
    min_rows: ClassVar[int] = 2

    def compute(  # type: ignore[override]
        self,
        x: Tensor,
        y: Tensor,
        *,
        k: int | None = None,
        energy: float = 0.9,
        metric: GrassmannMetric = "geodesic",
    ) -> Tensor:
        if metric not in _METRICS:
            raise ValueError(f"unknown Grassmann metric {metric!r}; use one of {_METRICS}")
        x64, y64 = x.to(torch.float64), y.to(torch.float64)
        _, svx, rx = _basis(x64)
        _, svy, ry = _basis(y64)
        if min(rx, ry) == 0:
            raise ValueError("a set has no spread (all rows equal): no subspace to compare")
        if k is None:
            if not 0 < energy <= 1:
                raise ValueError(f"energy must be in (0, 1], got {energy}")
            k = max(_k_for_energy(svx[:rx], energy), _k_for_energy(svy[:ry], energy))
            k = min(k, rx, ry)
        if k < 1 or k > min(rx, ry):
            raise ValueError(
                f"k={k} is outside 1..{min(rx, ry)}, the rank of the centred sets "
                f"(ranks {rx} and {ry}); use a smaller k or more samples"
            )
        theta = principal_angles(x64, y64, k)
        if metric == "geodesic":
            return theta.square().sum().sqrt()
        if metric == "chordal":
            return (2 * torch.sin(theta / 2)).square().sum().sqrt()
        if metric == "projection":
            return torch.sin(theta).square().sum().sqrt()
        cos_prod = torch.cos(theta).prod().clamp(0, 1)
        if metric == "binet_cauchy":
            return (1 - cos_prod**2).clamp_min(0).sqrt()
        return torch.arccos(cos_prod)


def grassmann(
    x: Tensor,
    y: Tensor,
    *,
    k: int | None = None,
    energy: float = 0.9,
    metric: GrassmannMetric = "geodesic",
) -> float:
    """Grassmann distance between the principal subspaces of the rows of ``x`` and ``y``.

    Args:
        x: ``n×d`` vectors (``n ≥ 2``).
        y: ``m×d`` vectors (``m ≥ 2``).
        k: subspace dimension; ``None`` picks it from ``energy``.
        energy: explained-variance share that sets ``k`` when ``k`` is ``None``.
        metric: ``geodesic``, ``chordal``, ``projection``, ``binet_cauchy``, ``fubini_study``.

    Raises:
        ValueError: ``k`` above the rank of either centred set, unknown metric, bad input.
    """
    return Grassmann()(x, y, k=k, energy=energy, metric=metric)
