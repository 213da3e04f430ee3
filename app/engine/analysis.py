"""Measures over many groups: distance matrices, separation summaries, layer profiles."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from sklearn.metrics import silhouette_score
from torch import Tensor

from app.engine.measures import MEASURES, get_measure, permutation_test
from app.engine.measures.base import as_samples
from app.engine.measures.mahalanobis import ledoit_wolf, oas

__all__ = [
    "PAIRWISE",
    "LabelSeparation",
    "MatrixResult",
    "Separation",
    "distance_matrix",
    "layer_profile",
    "pairwise_distances",
    "separation",
]

Pairwise = Literal["euclidean", "std_euclidean", "cosine", "mahalanobis"]
PAIRWISE: tuple[str, ...] = ("euclidean", "std_euclidean", "cosine", "mahalanobis")


@dataclass(frozen=True)
class MatrixResult:
    """A measure over all pairs of groups; ``values[i, j]`` compares ``labels[i]`` and
    ``labels[j]``; ``p_values`` holds permutation p-values when asked for."""

    labels: list[str]
    values: Tensor
    p_values: Tensor | None
    higher_is_better: bool
    measure: str


def distance_matrix(
    groups: Mapping[str, Tensor],
    measure: str,
    *,
    permutations: int = 0,
    seed: int = 0,
    **options: Any,
) -> MatrixResult:
    """The measure between every pair of groups (rows of each tensor are samples).

    The upper triangle is computed and mirrored (every measure here is symmetric except
    the linear-time MMD, whose mirror is the ``(i, j)`` value). The diagonal is 0 for
    distances (a group is at distance 0 from itself) and ``measure(g, g)`` for similarities;
    its p-values are 1.

    Args:
        groups: label → ``n_g×d`` samples (at least 2 groups, one ``d``).
        measure: a registered measure name.
        permutations: when > 0, a permutation test per pair with this many draws.
        seed: seed of the permutation draws (each pair uses it).
        **options: keywords for the measure.

    Returns:
        The matrix with labels in the mapping's order.

    Raises:
        ValueError: fewer than 2 groups or bad samples. KeyError: unknown measure.
    """
    m = get_measure(measure)
    labels = list(groups)
    if len(labels) < 2:
        raise ValueError(f"a matrix needs at least 2 groups, got {len(labels)}")
    k = len(labels)
    values = torch.zeros(k, k, dtype=torch.float64)
    p_values = torch.ones(k, k, dtype=torch.float64) if permutations > 0 else None
    for i in range(k):
        if m.higher_is_better:
            values[i, i] = m(groups[labels[i]], groups[labels[i]], **options)
        for j in range(i + 1, k):
            a, b = groups[labels[i]], groups[labels[j]]
            if p_values is not None:
                r = permutation_test(
                    measure, a, b, permutations=permutations, seed=seed, **options
                )
                values[i, j] = values[j, i] = r.statistic
                p_values[i, j] = p_values[j, i] = r.p_value
            else:
                values[i, j] = values[j, i] = m(a, b, **options)
    return MatrixResult(labels, values, p_values, MEASURES[measure].higher_is_better, measure)


@dataclass(frozen=True)
class LabelSeparation:
    """One label's mean distance to its own samples (``intra``) and to the others'."""

    intra: float
    inter: float


@dataclass(frozen=True)
class Separation:
    """Mean intra-label and inter-label pairwise distance, ``ratio = inter / intra``
    (above 1 means labels separate), and the silhouette on the same distances."""

    intra: float
    inter: float
    ratio: float
    silhouette: float
    per_label: dict[str, LabelSeparation] = field(default_factory=dict)


def pairwise_distances(
    samples: Tensor, measure: Pairwise = "euclidean", *, labels: Sequence[str] | None = None,
    shrinkage: Literal["ledoit_wolf", "oas"] = "ledoit_wolf",
) -> Tensor:
    """Distances between every pair of rows (float64, ``n×n``).

    ``std_euclidean`` divides each feature by its std over all rows (``ddof=1``; constant
    features dropped); ``cosine`` is ``1 − cos``; ``mahalanobis`` whitens with the shrunk
    covariance of the residuals about each label's mean (``labels`` required).

    Raises:
        ValueError: unknown measure, zero rows for cosine, missing labels.
    """
    z = as_samples(samples, "samples").to(torch.float64)
    if measure == "euclidean":
        return torch.cdist(z, z).fill_diagonal_(0)
    if measure == "std_euclidean":
        var = z.var(0, correction=1) if z.shape[0] > 1 else torch.zeros(z.shape[1])
        keep = var > 0
        w = z[:, keep] / var[keep].sqrt()
        return torch.cdist(w, w).fill_diagonal_(0)
    if measure == "cosine":
        norms = z.norm(dim=1, keepdim=True)
        if bool((norms == 0).any()):
            raise ValueError("cosine distance is undefined for zero rows; drop them first")
        u = z / norms
        sim: Tensor = u @ u.T
        return torch.clamp(1 - sim, 0, 2).fill_diagonal_(0)
    if measure == "mahalanobis":
        if labels is None:
            raise ValueError("mahalanobis pairwise distances need the labels (per-label means)")
        idx = _label_index(labels, z.shape[0])
        resid = torch.cat([z[i] - z[i].mean(0) for i in idx.values()])
        cov = ledoit_wolf(resid) if shrinkage == "ledoit_wolf" else oas(resid)
        chol = torch.linalg.cholesky(cov)
        w = torch.linalg.solve_triangular(chol, z.T, upper=False).T
        return torch.cdist(w, w).fill_diagonal_(0)
    raise ValueError(f"separation uses pairwise sample distances; use one of {PAIRWISE}")


def _label_index(labels: Sequence[str], n: int) -> dict[str, Tensor]:
    if len(labels) != n:
        raise ValueError(f"{len(labels)} labels for {n} samples; give one label per row")
    out: dict[str, list[int]] = {}
    for i, lab in enumerate(labels):
        out.setdefault(str(lab), []).append(i)
    return {k: torch.tensor(v) for k, v in out.items()}


def separation(
    samples: Tensor, labels: Sequence[str], measure: Pairwise = "euclidean", **options: Any
) -> Separation:
    """How well labels separate: pairwise distances within vs across labels.

    ``intra`` is the mean distance over pairs ``i ≠ j`` of the same label, ``inter`` the mean
    over pairs of different labels; per label, ``intra`` is over its own pairs (NaN for a
    single sample) and ``inter`` from its samples to all others. ``silhouette`` is
    sklearn's ``silhouette_score`` on the same distance matrix.

    Args:
        samples: ``n×d`` descriptors, one row per box.
        labels: one label per row (at least 2 distinct, one with 2 or more samples).
        measure: ``euclidean``, ``std_euclidean``, ``cosine`` or ``mahalanobis``.
        **options: passed to :func:`pairwise_distances` (e.g. ``shrinkage``).

    Raises:
        ValueError: wrong label count, fewer than 2 labels, no label with 2 samples,
            every sample its own label, or a measure that is not pairwise.
    """
    idx = _label_index(labels, int(samples.shape[0]) if samples.ndim else 0)
    if len(idx) < 2:
        raise ValueError("separation needs at least 2 different labels")
    if len(idx) >= len(labels):
        raise ValueError("every sample has its own label: give some label 2 or more samples")
    d = pairwise_distances(samples, measure, labels=labels, **options)
    codes = torch.empty(d.shape[0], dtype=torch.long)
    for c, i in enumerate(idx.values()):
        codes[i] = c
    same = codes[:, None] == codes[None, :]
    off = ~torch.eye(d.shape[0], dtype=torch.bool)
    intra = float(d[same & off].mean())
    inter = float(d[~same].mean())
    per_label = {}
    for lab, i in idx.items():
        block = d[i][:, i]
        n = len(i)
        li = float(block.sum() / (n * n - n)) if n > 1 else math.nan
        others = ~same[i[0]]
        per_label[lab] = LabelSeparation(intra=li, inter=float(d[i][:, others].mean()))
    sil = float(silhouette_score(d.numpy(), np.asarray(codes), metric="precomputed"))
    ratio = inter / intra if intra > 0 else math.inf
    return Separation(intra, inter, ratio, sil, per_label)


def layer_profile(
    per_layer: Mapping[str, tuple[Tensor, Sequence[str]]],
    measure: Pairwise = "euclidean",
    **options: Any,
) -> list[tuple[str, Separation]]:
    """:func:`separation` at every layer, in the mapping's order.

    Args:
        per_layer: layer name → (``n×d_layer`` descriptors, their labels), e.g. from one
            forward pass that returned every chosen layer.
        measure: as in :func:`separation`.
        **options: as in :func:`separation`.

    Raises:
        ValueError: no layers, or what :func:`separation` raises (the message names the layer).
    """
    if not per_layer:
        raise ValueError("layer_profile needs at least one layer")
    out = []
    for layer, (samples, labels) in per_layer.items():
        try:
            out.append((layer, separation(samples, labels, measure, **options)))
        except ValueError as err:
            raise ValueError(f"layer {layer!r}: {err}") from err
    return out
