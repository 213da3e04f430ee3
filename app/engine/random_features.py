"""MMD² between large sets from per-shard sums of random Fourier features.

Kernel sums over pairs do not reduce from moments, but with random Fourier features
(Rahimi & Recht 2007) ``k(a, b) ≈ φ(a)·φ(b)`` and every kernel sum MMD needs becomes a sum
of feature vectors: ``Σᵢⱼ k(xᵢ, yⱼ) ≈ (Σᵢ φ(xᵢ))·(Σⱼ φ(yⱼ))``. A shard adds ``Σ φ`` per label
(a vector of ``2·features·len(scales)`` floats), shards add up exactly, and the estimate
costs ``O(n · d · features)`` instead of ``O(n² d)``.

The kernel is :class:`app.engine.measures._kernels.Kernel`'s: ``weight · Σ_s exp(−‖a−b‖²/s)``;
for ``exp(−‖δ‖²/s)`` the frequencies are ``ω ~ N(0, 2/s · I)`` and ``φ_s(a) = [cos ωᵀa,
sin ωᵀa] / √features``, so ``φ(a)·φ(a)`` is exactly the kernel at zero. The approximation
error of each kernel value is ``O(1/√features)`` (the estimate is not the exact MMD; it is
the exact MMD of the random kernel ``φ·φ``, which converges to it). ``multi_kernel`` makes
the seed/DAN bandwidths from moments alone: their centre, the mean squared distance over
pooled pairs, is ``2·tr(scatter)/(n − 1)``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from app.engine.moments import Moments

__all__ = ["FeatureSums", "RandomFeatures", "mmd_from_features", "multi_kernel", "add_sums"]

F64 = NDArray[np.float64]


@dataclass(frozen=True)
class RandomFeatures:
    """Seeded random Fourier features of ``weight · Σ_s exp(−‖a−b‖²/s)``.

    Attributes:
        scales: the kernel scales ``s`` (``2σ²``), positive.
        weight: each scale's weight (``1/len(scales)`` averages them).
        features: frequencies per scale (the map has ``2·features`` floats per scale).
        width: input features ``d``.
        seed: the frequencies' seed: every shard must use the same.
    """

    scales: tuple[float, ...]
    weight: float
    features: int
    width: int
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.scales or any(not (s > 0 and np.isfinite(s)) for s in self.scales):
            raise ValueError(f"kernel scales must be positive and finite, got {self.scales}")
        if self.features < 1 or self.width < 1:
            raise ValueError("features and width must be at least 1")

    @property
    def at_zero(self) -> float:
        """The kernel's value for identical points (``φ(a)·φ(a)``, exactly)."""
        return self.weight * len(self.scales)

    def _gaussian(self) -> F64:
        # One standard normal draw serves every scale (ω_s = g·√(2/s)): ``d×features``.
        return np.random.default_rng(self.seed).standard_normal((self.width, self.features))

    def map(self, rows: NDArray[np.floating], shift: NDArray[np.floating]) -> F64:
        """``φ(x − shift)`` of each row (``n × 2·features·len(scales)``); the kernel depends
        only on differences, so any shift shared by all shards gives the same kernel."""
        x = np.asarray(rows, dtype=np.float64) - np.asarray(shift, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.width:
            raise ValueError(f"rows must be n×{self.width}, got {x.shape}")
        base = x @ self._gaussian()
        norm = np.sqrt(self.weight / self.features)
        parts = []
        for s in self.scales:
            phase = base * np.sqrt(2.0 / s)
            parts += [np.cos(phase) * norm, np.sin(phase) * norm]
        return np.concatenate(parts, axis=1)


@dataclass(frozen=True)
class FeatureSums:
    """A set's count and ``Σ φ(x)``."""

    count: int
    total: F64

    def __add__(self, other: FeatureSums) -> FeatureSums:
        return FeatureSums(self.count + other.count, self.total + other.total)


def label_sums(
    features: RandomFeatures,
    rows: NDArray[np.floating],
    labels: Iterable[str],
    shift: NDArray[np.floating],
    *,
    chunk: int = 256,
) -> dict[str, FeatureSums]:
    """Each label's ``Σ φ`` over ``rows`` (one label per row), ``chunk`` rows at a time
    (``φ`` of every row at once would be ``n × 2·features·len(scales)`` floats)."""
    names = list(labels)
    x = np.asarray(rows)
    if len(names) != x.shape[0]:
        raise ValueError(f"{len(names)} labels for {x.shape[0]} rows; give one per row")
    order = list(dict.fromkeys(names))
    index = {name: i for i, name in enumerate(order)}
    codes = np.fromiter((index[n] for n in names), dtype=np.int64, count=len(names))
    width = 2 * features.features * len(features.scales)
    totals = np.zeros((len(order), width))
    for start in range(0, x.shape[0], chunk):
        phi = features.map(x[start : start + chunk], shift)
        onehot = np.zeros((len(order), phi.shape[0]))
        onehot[codes[start : start + chunk], np.arange(phi.shape[0])] = 1.0
        totals += onehot @ phi
    counts = np.bincount(codes, minlength=len(order))
    return {name: FeatureSums(int(counts[i]), totals[i]) for i, name in enumerate(order)}


def add_sums(total: dict[str, FeatureSums], part: Mapping[str, FeatureSums]) -> None:
    """Add a shard's per-label sums into ``total``."""
    for name, sums in part.items():
        total[name] = total[name] + sums if name in total else sums


def mmd_from_features(
    a: FeatureSums, b: FeatureSums, at_zero: float, estimator: str = "biased"
) -> float:
    """MMD² of the random-feature kernel from two sets' sums: ``biased`` (V-statistic,
    ``‖Σφ(x)/n − Σφ(y)/m‖²``) or ``unbiased`` (U-statistic: the within-set diagonals,
    ``n · k(0)``, left out; can be negative).

    Raises:
        ValueError: an empty set, or fewer than 2 per side for ``unbiased``.
    """
    n, m = a.count, b.count
    if min(n, m) < 1:
        raise ValueError("MMD needs at least one sample per side")
    sxx, syy, sxy = float(a.total @ a.total), float(b.total @ b.total), float(a.total @ b.total)
    if estimator == "biased":
        return sxx / n**2 + syy / m**2 - 2 * sxy / (n * m)
    if estimator != "unbiased":
        raise ValueError(f"unknown estimator {estimator!r}; use 'biased' or 'unbiased'")
    if min(n, m) < 2:
        raise ValueError("the unbiased MMD estimator needs at least 2 samples per side")
    return (
        (sxx - n * at_zero) / (n * (n - 1))
        + (syy - m * at_zero) / (m * (m - 1))
        - 2 * sxy / (n * m)
    )


def multi_kernel(
    groups: Iterable[Moments], kernel_mul: float = 2.0, kernel_num: int = 5
) -> tuple[tuple[float, ...], float]:
    """The seed/DAN family's scales and weight for the pooled groups, from moments:
    ``s_i = c · kernel_mul**(i − kernel_num//2)`` with ``c`` the mean ``‖zi − zj‖²`` over
    pooled pairs ``i ≠ j`` (``mmd(kernel="multi")``'s, exactly).

    Raises:
        ValueError: fewer than 2 pooled rows, or a bad family.
    """
    if kernel_num < 1 or kernel_mul <= 0:
        raise ValueError("kernel_num must be ≥ 1 and kernel_mul > 0")
    parts = list(groups)
    pooled = parts[0]
    for part in parts[1:]:
        pooled = pooled + part
    if pooled.count < 2:
        raise ValueError("the multi-kernel bandwidth needs at least 2 pooled rows")
    centre = 2 * float(np.trace(pooled.scatter())) / (pooled.count - 1) or 1.0
    base = centre / kernel_mul ** (kernel_num // 2)
    return tuple(base * kernel_mul**i for i in range(kernel_num)), 1.0 / kernel_num
