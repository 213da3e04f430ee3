"""Grassmann distances between the principal subspaces of two sets of vectors."""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field
from torch import Tensor

from app.engine.measures.base import Measure, MeasureOptions, register

__all__ = ["Grassmann", "GrassmannMetric", "GrassmannOptions", "grassmann", "principal_angles"]

GrassmannMetric = Literal["geodesic", "chordal", "projection", "binet_cauchy", "fubini_study"]


class GrassmannOptions(MeasureOptions):
    """Options of :class:`Grassmann` (``k`` is further capped by the sets' ranks)."""

    k: int | None = Field(
        None,
        ge=1,
        le=8192,
        description=("Subspace dimension; none: the fewest directions that explain `energy`."),
    )
    energy: float = Field(
        0.9,
        gt=0,
        le=1,
        description=("Explained-variance share that sets k when k is none, in (0, 1]."),
    )
    metric: GrassmannMetric = "geodesic"


def _basis(s: Tensor) -> tuple[Tensor, Tensor, int]:
    centred = s - s.mean(0)
    _, sv, vh = torch.linalg.svd(centred, full_matrices=False)
    tol = sv.max() * max(s.shape) * torch.finfo(s.dtype).eps if sv.numel() else 0.0
    rank = int((sv > tol).sum())
    return vh.T, sv, rank


def _k_for_energy(sv: Tensor, energy: float) -> int:
    share = sv.square().cumsum(0) / sv.square().sum()
    return int((share < energy - 1e-12).sum()) + 1


def _angles(qx: Tensor, qy: Tensor) -> Tensor:
    """Principal angles, ascending, between the spans of orthonormal ``d×k`` columns.

    ``arccos`` of the cosines loses half the digits near 0 (identical subspaces came out at
    3.7e-8), so angles whose cosine² is at least ½ come from the sines, the singular values
    of ``qy − qx qxᵀ qy`` (Björck & Golub 1973; scipy's ``subspace_angles`` does the same).
    """
    m = qx.T @ qy
    cos = torch.linalg.svdvals(m)  # descending: the smallest angle first
    sin = torch.linalg.svdvals(qy - qx @ m).flip(0)  # ascending, aligned with cos
    from_cos = torch.arccos(cos.clamp(-1, 1))
    from_sin = torch.arcsin(sin.clamp(0, 1))
    return torch.where(cos.square() >= 0.5, from_sin, from_cos)


def principal_angles(x: Tensor, y: Tensor, k: int) -> Tensor:
    """Principal angles (radians, ascending: ``θ₁ ≤ … ≤ θ_k``) between the top-``k``
    principal subspaces of the centred rows of ``x`` and ``y`` (checked inputs).

    scipy's ``subspace_angles`` returns the same angles in descending order.
    """
    bx, _, _ = _basis(x)
    by, _, _ = _basis(y)
    return _angles(bx[:, :k], by[:, :k])


def _one_minus_cos_product(theta: Tensor) -> Tensor:
    """``1 − Π cos θ`` without cancellation for small angles:
    ``−expm1(½ Σ log1p(−sin²θ))``."""
    return -torch.expm1(0.5 * torch.log1p(-torch.sin(theta).square()).sum())


@register
class Grassmann(Measure):
    """Distance between the top-``k`` principal subspaces (rows centred) of two sets.

    With ``k=None`` each side takes the fewest directions that explain ``energy`` of its
    variance and both use the larger of the two (capped at the smaller rank). Metrics on
    the principal angles ``θ`` (Hamm & Lee 2008; Edelman et al. 1998): geodesic ``‖θ‖₂``;
    chordal ``‖2 sin(θ/2)‖₂``;
    projection ``‖sin θ‖₂`` (= ``‖P_x − P_y‖_F/√2``); Binet–Cauchy ``√(1 − Π cos²θ)``;
    Fubini–Study ``arccos Π cos θ``. Each is computed from sines where small angles need
    it, so identical subspaces give 0 to rounding (not the ``√ε`` of ``arccos``).
    """

    name: ClassVar[str] = "grassmann"
    interval_refusal = (
        "bootstrap intervals of the distance between principal subspaces do not hold their "
        "level: on random splits of 80 real boxes (a null by construction, distance 0; gap "
        "at conv_head) 95% studentized intervals covered 0 in 82 of 100 splits; the "
        "permutation test's p-value holds its level"
    )
    needs = "pixels"
    between = "sets"
    min_rows: ClassVar[int] = 2
    Options = GrassmannOptions
    options: GrassmannOptions

    def compute(self, x: Tensor, y: Tensor) -> Tensor:
        k, energy, metric = self.options.k, self.options.energy, self.options.metric
        x64, y64 = x.to(torch.float64), y.to(torch.float64)
        bx, svx, rx = _basis(x64)
        by, svy, ry = _basis(y64)
        if min(rx, ry) == 0:
            raise ValueError("a set has no spread (all rows equal): no subspace to compare")
        if k is None:
            k = max(_k_for_energy(svx[:rx], energy), _k_for_energy(svy[:ry], energy))
            k = min(k, rx, ry)
        if k < 1 or k > min(rx, ry):
            raise ValueError(
                f"k={k} is outside 1..{min(rx, ry)}, the rank of the centred sets "
                f"(ranks {rx} and {ry}); use a smaller k or more samples"
            )
        theta = _angles(bx[:, :k], by[:, :k])
        if metric == "geodesic":
            return theta.square().sum().sqrt()
        if metric == "chordal":
            return (2 * torch.sin(theta / 2)).square().sum().sqrt()
        if metric == "projection":
            return torch.sin(theta).square().sum().sqrt()
        one_minus = _one_minus_cos_product(theta).clamp(0, 1)
        if metric == "binet_cauchy":  # 1 − Π cos²θ = (1 − Π cos θ)(1 + Π cos θ)
            return (one_minus * (2 - one_minus)).sqrt()
        return 2 * torch.arcsin((one_minus / 2).sqrt())  # arccos c = 2 arcsin √((1 − c)/2)


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
        k: subspace dimension (≥ 1); ``None`` picks it from ``energy``.
        energy: explained-variance share in ``(0, 1]`` that sets ``k`` when ``k`` is ``None``.
        metric: ``geodesic``, ``chordal``, ``projection``, ``binet_cauchy``, ``fubini_study``.

    Raises:
        ValueError: ``k`` above the rank of either centred set, unknown metric, bad input.
    """
    return Grassmann(k=k, energy=energy, metric=metric)(x, y)
