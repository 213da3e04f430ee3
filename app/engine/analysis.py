"""Measures over many groups: distance matrices, separation summaries, layer profiles."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.metrics import silhouette_score
from torch import Tensor

from app.engine.measures import Measure, get_measure

__all__ = [
    "LabelSeparation",
    "MatrixResult",
    "Separation",
    "distance_matrix",
    "layer_profile",
    "separation",
]


@dataclass(frozen=True)
class MatrixResult:
    """A measure over all pairs of groups; ``values[i, j]`` compares ``labels[i]`` and
    ``labels[j]``."""

    labels: list[str]
    values: Tensor
    higher_is_better: bool
    measure: str


def _configured(measure: Measure | str) -> Measure:
    return get_measure(measure) if isinstance(measure, str) else measure


def distance_matrix(groups: Mapping[str, Tensor], measure: Measure | str) -> MatrixResult:
    """The measure between every pair of groups (rows of each tensor are samples).

    Values as :meth:`Measure.pairwise_sets`: the upper triangle mirrored, the diagonal 0 for
    distances and ``measure(g, g)`` for similarities. For tests between the groups, which
    must exchange whole boxes or images rather than rows, use
    :func:`app.engine.inference.matrix_tests`.

    Args:
        groups: label → ``n_g×d`` samples (at least 2 groups, one ``d``).
        measure: a configured measure (``get_measure(name, **options)``), or a registered
            name for its default options.

    Returns:
        The matrix with labels in the mapping's order.

    Raises:
        ValueError: fewer than 2 groups or bad samples. KeyError: unknown measure.
    """
    m = _configured(measure)
    labels = list(groups)
    if len(labels) < 2:
        raise ValueError(f"a matrix needs at least 2 groups, got {len(labels)}")
    values = m.pairwise_sets([groups[label] for label in labels])
    return MatrixResult(labels, values, m.higher_is_better, m.name)


@dataclass(frozen=True)
class LabelSeparation:
    """One label's mean value among its own samples (``intra``) and to the others'."""

    intra: float
    inter: float


@dataclass(frozen=True)
class Separation:
    """Mean intra-label and inter-label pairwise values, their ratio and the silhouette.

    ``ratio`` is oriented so that above 1 always means the labels separate: ``inter /
    intra`` for distances, ``intra / inter`` for similarities (``higher_is_better``).
    ``silhouette`` is sklearn's on the distances, NaN for similarities (no distance).
    """

    intra: float
    inter: float
    ratio: float
    silhouette: float
    per_label: dict[str, LabelSeparation] = field(default_factory=dict)


def _label_index(labels: Sequence[str], n: int) -> dict[str, Tensor]:
    if len(labels) != n:
        raise ValueError(f"{len(labels)} labels for {n} samples; give one label per row")
    out: dict[str, list[int]] = {}
    for i, lab in enumerate(labels):
        out.setdefault(str(lab), []).append(i)
    return {k: torch.tensor(v) for k, v in out.items()}


def _ratio(top: float, bottom: float) -> float:
    if bottom > 0:
        return top / bottom
    return math.inf if top > 0 else math.nan


def separation(
    samples: Tensor | Sequence[Tensor],
    labels: Sequence[str],
    measure: Measure | str = "euclidean",
) -> Separation:
    """How well labels separate: the measure between samples within vs across labels.

    A sample is a row of ``samples`` (one descriptor per box: the values are
    :meth:`Measure.pairwise`) or one tensor of a sequence (a box's set of rows, e.g. its
    ``pixels``: the values are :meth:`Measure.pairwise_sets`, the measure between two boxes'
    sets, which is how set measures such as ``mmd`` or ``grassmann`` take part). ``intra``
    is the mean value over pairs ``i ≠ j`` of the same label, ``inter`` the mean over pairs
    of different labels; per label, ``intra`` is over its own pairs (NaN for a single
    sample) and ``inter`` from its samples to all others. ``silhouette`` is sklearn's
    ``silhouette_score`` on the same distance matrix (NaN for similarities). Estimators that
    can be negative (unbiased or linear MMD) can make ``intra`` ≤ 0; the ratio is then
    ``inf`` or NaN.

    Args:
        samples: ``n×d`` descriptors, one row per box; or ``n`` tensors of ``n_i×d`` rows.
        labels: one label per sample (at least 2 distinct, one with 2 or more samples).
        measure: a configured measure (``get_measure(name, **options)``), or a registered
            name for its default options.

    Raises:
        ValueError: wrong label count, fewer than 2 labels, no label with 2 samples,
            every sample its own label, or what the measure raises.
        KeyError: an unknown measure name.
    """
    m = _configured(measure)
    n = int(samples.shape[0]) if isinstance(samples, Tensor) and samples.ndim else len(samples)
    idx = _label_index(labels, n)
    if len(idx) < 2:
        raise ValueError("separation needs at least 2 different labels")
    if len(idx) >= len(labels):
        raise ValueError("every sample has its own label: give some label 2 or more samples")
    d = m.pairwise(samples, labels) if isinstance(samples, Tensor) else m.pairwise_sets(samples)
    codes = torch.empty(n, dtype=torch.long)
    for c, i in enumerate(idx.values()):
        codes[i] = c
    same = codes[:, None] == codes[None, :]
    off = ~torch.eye(n, dtype=torch.bool)
    intra = float(d[same & off].mean())
    inter = float(d[~same].mean())
    per_label = {}
    for lab, i in idx.items():
        block = d[i][:, i]
        k = len(i)
        li = float((block.sum() - block.diagonal().sum()) / (k * k - k)) if k > 1 else math.nan
        others = ~same[i[0]]
        per_label[lab] = LabelSeparation(intra=li, inter=float(d[i][:, others].mean()))
    if m.higher_is_better:
        return Separation(intra, inter, _ratio(intra, inter), math.nan, per_label)
    sil = float(silhouette_score(d.numpy(), np.asarray(codes), metric="precomputed"))
    return Separation(intra, inter, _ratio(inter, intra), sil, per_label)


def layer_profile(
    per_layer: Mapping[str, tuple[Tensor | Sequence[Tensor], Sequence[str]]],
    measure: Measure | str = "euclidean",
) -> list[tuple[str, Separation]]:
    """:func:`separation` at every layer, in the mapping's order.

    Args:
        per_layer: layer name → (the samples as in :func:`separation`, their labels), e.g.
            from one forward pass that returned every chosen layer.
        measure: as in :func:`separation`.

    Raises:
        ValueError: no layers, or what :func:`separation` raises (the message names the layer).
    """
    if not per_layer:
        raise ValueError("layer_profile needs at least one layer")
    m = _configured(measure)
    out = []
    for layer, (samples, labels) in per_layer.items():
        try:
            out.append((layer, separation(samples, labels, m)))
        except ValueError as err:
            raise ValueError(f"layer {layer!r}: {err}") from err
    return out
