"""Sufficient statistics of sets of descriptors, mergeable across shards, and the group
measures that need nothing else: ``euclidean``, ``std_euclidean`` and ``mahalanobis``
(Ledoit–Wolf or OAS) between two groups, equal to :mod:`app.engine.measures` on the rows.

A :class:`Moments` holds, in float64, about a fixed ``shift`` ``c`` (``y = x − c``): the
count ``n``, ``Σy``, ``Σyyᵀ``, ``Σ‖y‖²y`` and ``Σ‖y‖⁴``. Shards of a dataset each build
theirs with the same shift, and ``a + b`` merges them exactly (sums add), so a cluster
reduces a label's statistics without any node holding its rows. The third- and
fourth-order sums are what Ledoit–Wolf needs besides the covariance: its ``β`` term is
``Σ‖xᵢ − μ‖⁴``, expanded here about the shift. A shift that is one of the rows (or near
the data) keeps the sums small, so subtracting them loses few digits; with the shift a row,
a feature that is constant over the rows has a variance of exactly zero, as on the rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "MAX_WIDTH",
    "MEASURES",
    "Moments",
    "add_into",
    "distance_matrix",
    "euclidean",
    "iter_label_moments",
    "label_moments",
    "mahalanobis",
    "merge",
    "shrunk_covariance",
    "std_euclidean",
]

F64 = NDArray[np.float64]
Shrinkage = Literal["ledoit_wolf", "oas"]

MAX_WIDTH = 8192
"""Widest row the statistics accept: ``Σyyᵀ`` of 8192 features is 512 MiB per label."""


@dataclass(frozen=True)
class Moments:
    """Count and power sums of rows ``x`` about ``shift`` (``y = x − shift``), float64.

    Attributes:
        count: rows ``n``.
        shift: ``d`` vector ``c`` the sums are taken about.
        total: ``Σ y`` (``d``).
        outer: ``Σ y yᵀ`` (``d×d``).
        weighted: ``Σ ‖y‖² y`` (``d``).
        fourth: ``Σ ‖y‖⁴``.
    """

    count: int
    shift: F64
    total: F64
    outer: F64
    weighted: F64
    fourth: float

    @classmethod
    def empty(cls, shift: NDArray[np.floating]) -> Moments:
        """No rows, about ``shift``."""
        c = _vector(shift)
        d = c.shape[0]
        if d > MAX_WIDTH:
            raise ValueError(
                f"rows of {d} features are too wide for covariance statistics (at most "
                f"{MAX_WIDTH}); use the 'gap' or 'pixels' descriptor"
            )
        return cls(0, c, np.zeros(d), np.zeros((d, d)), np.zeros(d), 0.0)

    @classmethod
    def of(cls, rows: NDArray[np.floating], shift: NDArray[np.floating]) -> Moments:
        """The moments of ``rows`` (``n×d``) about ``shift`` (``d``).

        Raises:
            ValueError: rows that are not ``n×d`` with the shift's ``d``, or not finite.
        """
        base = cls.empty(shift)
        x = np.asarray(rows, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != base.shift.shape[0]:
            raise ValueError(
                f"rows must be n×{base.shift.shape[0]} (the shift's width), got {x.shape}"
            )
        if not np.isfinite(x).all():
            raise ValueError("rows hold NaN or infinite values; statistics need finite rows")
        y = x - base.shift
        norms = np.einsum("ij,ij->i", y, y)
        return cls(
            x.shape[0],
            base.shift,
            y.sum(0),
            y.T @ y,
            norms @ y,
            float(norms @ norms),
        )

    def __add__(self, other: Moments) -> Moments:
        """The moments of both sets of rows (both must use the same shift)."""
        if self.shift.shape != other.shift.shape or not np.array_equal(self.shift, other.shift):
            raise ValueError("moments about different shifts cannot be added; use one shift")
        return Moments(
            self.count + other.count,
            self.shift,
            self.total + other.total,
            self.outer + other.outer,
            self.weighted + other.weighted,
            self.fourth + other.fourth,
        )

    @property
    def width(self) -> int:
        """Features ``d``."""
        return int(self.shift.shape[0])

    def _need(self, rows: int) -> None:
        if self.count < rows:
            raise ValueError(f"needs at least {rows} rows, got {self.count}")

    @property
    def mean(self) -> F64:
        """``μ = c + Σy / n``."""
        self._need(1)
        return self.shift + self.total / self.count

    def scatter(self) -> F64:
        """``Σ (x − μ)(x − μ)ᵀ`` (the centred sum of outer products)."""
        self._need(1)
        m = self.total / self.count
        return self.outer - self.count * np.outer(m, m)

    def covariance(self, ddof: int = 1) -> F64:
        """``scatter / (n − ddof)``."""
        self._need(ddof + 1)
        return self.scatter() / (self.count - ddof)

    def variance(self, ddof: int = 1) -> F64:
        """The per-feature variance (the covariance's diagonal), never below zero."""
        self._need(ddof + 1)
        m = self.total / self.count
        var = (np.diagonal(self.outer) - self.count * m * m) / (self.count - ddof)
        return np.maximum(var, 0.0)

    def centred_fourth(self) -> float:
        """``Σ ‖x − μ‖⁴``, expanded about the shift: with ``a = ‖y‖²``, ``b = y·m``,
        ``m = Σy/n``: ``Σa² − 4Σab + 4Σb² + 2‖m‖²Σa − 4‖m‖²Σb + n‖m‖⁴``."""
        self._need(1)
        m = self.total / self.count
        mm = float(m @ m)
        value = (
            self.fourth
            - 4 * float(m @ self.weighted)
            + 4 * float(m @ self.outer @ m)
            + 2 * mm * float(np.trace(self.outer))
            - 4 * mm * float(m @ self.total)
            + self.count * mm * mm
        )
        return max(value, 0.0)


def _vector(shift: NDArray[np.floating]) -> F64:
    c = np.array(shift, dtype=np.float64).reshape(-1)
    if c.shape[0] < 1:
        raise ValueError("the shift needs at least one feature")
    if not np.isfinite(c).all():
        raise ValueError("the shift holds NaN or infinite values")
    return c


def iter_label_moments(
    rows: NDArray[np.floating], labels: Iterable[str], shift: NDArray[np.floating]
) -> Iterator[tuple[str, Moments]]:
    """Each label's moments, one label at a time (``labels`` has one entry per row): a
    caller that adds each into a running total holds one label's ``d×d`` extra at most."""
    x = np.asarray(rows)
    names = list(labels)
    if len(names) != x.shape[0]:
        raise ValueError(f"{len(names)} labels for {x.shape[0]} rows; give one per row")
    index: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        index.setdefault(name, []).append(i)
    for name, ids in index.items():
        yield name, Moments.of(x[ids], shift)


def label_moments(
    rows: NDArray[np.floating], labels: Iterable[str], shift: NDArray[np.floating]
) -> dict[str, Moments]:
    """The moments of each label's rows (``labels`` has one entry per row)."""
    return dict(iter_label_moments(rows, labels, shift))


def add_into(total: dict[str, Moments], part: Mapping[str, Moments]) -> None:
    """Add a shard's per-label moments into ``total``, in place: a label's ``d×d`` sum is
    held once however many shards arrive (``total`` owns its arrays: start it empty)."""
    for name, moments in part.items():
        had = total.get(name)
        if had is None:
            total[name] = Moments(  # a copy of our own to add into
                moments.count,
                moments.shift,
                moments.total.copy(),
                moments.outer.copy(),
                moments.weighted.copy(),
                moments.fourth,
            )
            continue
        if not np.array_equal(had.shift, moments.shift):
            raise ValueError("moments about different shifts cannot be added; use one shift")
        np.add(had.total, moments.total, out=had.total)
        np.add(had.outer, moments.outer, out=had.outer)
        np.add(had.weighted, moments.weighted, out=had.weighted)
        total[name] = Moments(
            had.count + moments.count,
            had.shift,
            had.total,
            had.outer,
            had.weighted,
            had.fourth + moments.fourth,
        )


def merge(parts: Iterable[Mapping[str, Moments]]) -> dict[str, Moments]:
    """Per-label moments of several shards added label by label (inputs left unchanged)."""
    out: dict[str, Moments] = {}
    for part in parts:
        add_into(out, part)
    return out


def euclidean(a: Moments, b: Moments) -> float:
    """``‖μa − μb‖₂`` (:class:`app.engine.measures.euclidean.Euclidean`)."""
    return float(np.linalg.norm(a.mean - b.mean))


def std_euclidean(a: Moments, b: Moments) -> float:
    """Euclidean distance of the means with each feature divided by its standard deviation
    over both sets pooled (``ddof=1``); constant features are left out
    (:class:`app.engine.measures.std_euclidean.StdEuclidean`)."""
    pooled = a + b
    if pooled.count < 2:
        raise ValueError("std_euclidean needs at least 2 samples in x and y together")
    var = pooled.variance(ddof=1)
    keep = var > 0
    diff = (a.mean - b.mean)[keep]
    return float(np.sqrt((diff * diff / var[keep]).sum()))


def shrunk_covariance(groups: Iterable[Moments], shrinkage: Shrinkage = "ledoit_wolf") -> F64:
    """The shrunk covariance of the groups' residuals about their own means, pooled (a
    group of one row adds none), as the Mahalanobis measure builds it from rows
    (sklearn's ``LedoitWolf``/``OAS`` with ``assume_centered=True`` on the residuals).

    Raises:
        ValueError: fewer than 2 residual rows, no spread, or an unknown shrinkage.
    """
    parts = [g for g in groups if g.count > 1]
    n = sum(g.count for g in parts)
    if not parts or n < 2:
        raise ValueError("mahalanobis needs a covariance: give at least 2 samples on one side")
    d = parts[0].width
    scatter = sum((g.scatter() for g in parts), np.zeros((d, d)))
    emp = scatter / n
    trace_terms = np.diagonal(emp)
    if not bool(trace_terms.max() > 0):
        raise ValueError("mahalanobis: the samples have no spread, so no covariance")
    mu = float(trace_terms.sum()) / d
    if shrinkage == "ledoit_wolf":
        beta_ = sum(g.centred_fourth() for g in parts)
        delta_ = float((emp * emp).sum())
        beta = (beta_ / n - delta_) / (d * n)
        delta = (delta_ - 2 * mu * float(trace_terms.sum()) + d * mu**2) / d
        beta = min(beta, delta)
        s = 0.0 if beta == 0 else beta / delta
    elif shrinkage == "oas":
        alpha = float((emp * emp).mean())
        num = alpha + mu**2
        den = (n + 1) * (alpha - mu**2 / d)
        s = 1.0 if den == 0 else min(num / den, 1.0)
    else:
        raise ValueError(f"unknown shrinkage {shrinkage!r}; use 'ledoit_wolf' or 'oas'")
    out: F64 = (1 - s) * emp + s * mu * np.eye(d)
    return out


def mahalanobis(a: Moments, b: Moments, shrinkage: Shrinkage = "ledoit_wolf") -> float:
    """``√((μa−μb)ᵀ Σ⁻¹ (μa−μb))`` with Σ the shrunk pooled within-group covariance
    (:class:`app.engine.measures.mahalanobis.Mahalanobis`); solved, never inverted."""
    cov = shrunk_covariance([a, b], shrinkage)
    diff = a.mean - b.mean
    quad = float(diff @ np.linalg.solve(cov, diff))
    return float(np.sqrt(max(quad, 0.0)))


MEASURES = {"euclidean": euclidean, "std_euclidean": std_euclidean, "mahalanobis": mahalanobis}
"""The group measures that moments answer, by name."""


def distance_matrix(stats: Mapping[str, Moments], measure: str) -> F64:
    """The measure between every pair of groups (in ``stats``' order), zero diagonal.

    Raises:
        ValueError: an unknown measure, or a pair the measure cannot compare.
    """
    if measure not in MEASURES:
        raise ValueError(f"unknown measure {measure!r}; use one of {sorted(MEASURES)}")
    between = MEASURES[measure]
    groups = list(stats.values())
    out = np.zeros((len(groups), len(groups)))
    for i in range(len(groups)):
        for j in range(i + 1, len(groups)):
            out[i, j] = out[j, i] = between(groups[i], groups[j])
    return out
