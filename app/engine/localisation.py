"""Localisation scores: how well a heat map at image size points at a box.

A box covers the pixels whose centres ``(j + ½, i + ½)`` lie in ``[x, x + w) × [y, y + h)``;
a box covering no pixel centre (thinner than a pixel, or outside the image) is a
``ValueError``, where Quantus returns NaN. The heat map is used raw: no normalisation and
no absolute value (Quantus's ``normalise=False, abs=False``), so scores of maps that keep a
sign (``cam``) mean what each definition below says.

Scores follow Quantus 0.6 (``quantus/metrics/localisation``); deliberate differences:

* ``pointing_game``: 1 when any pixel holding the map's maximum lies in the box (ties count,
  as in Quantus), else 0. A constant map therefore hits every box. Quantus stores NaN as
  ``True`` for an empty mask and crashes with ``weighted=True``; neither happens here.
* ``energy`` (relevance mass): ``Σ_box a⁺ / Σ a⁺`` on the map's non-negative part
  ``a⁺ = max(a, 0)``, so it lies in [0, 1]. Quantus divides raw sums (values above 1 or
  negative on signed maps); on non-negative maps the two agree. A map with no positive
  value gives 0 (no relevance falls in the box), where Quantus gives NaN.
* ``relevance_rank``: the share of the ``|box|`` highest pixels that lie in the box.
* ``top_k_intersection``: the share of the ``k`` highest pixels (option ``k``, default 1000
  as in Quantus, at most the pixel count) that lie in the box; ``concept_influence=True``
  multiplies by ``pixels / |box|`` as Quantus does.
  For both rank scores, pixels tied with the k-th value share the remaining places: the
  score is its expected value when ties are broken uniformly at random, so it does not
  depend on memory order. Quantus breaks ties by ``np.argsort`` order; without ties
  (continuous maps) the two agree.
* ``auc``: ROC-AUC of the map as a classifier of box pixels against the rest, ties counted
  as one half (as scikit-learn's ``roc_curve`` + ``auc`` count them, which Quantus uses).
  A box covering every pixel leaves no negative pixel: the AUC is undefined and NaN is
  returned (scikit-learn warns and returns NaN too). A constant map gives 0.5.
* ``iou`` (not in Quantus): IoU of the thresholded map with the box. Option
  ``threshold_mode="fraction"`` (default) keeps pixels with ``a ≥ threshold · max(a)``
  (``threshold`` default 0.5), and nothing when ``max(a) ≤ 0``; ``"quantile"`` keeps pixels
  with ``a ≥`` the ``threshold``-quantile of the map (a constant map keeps every pixel).

Everything is vectorised numpy on the flattened ``H×W`` map; the per-map work (maximum,
ranks) is done once for all boxes.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import Any, ClassVar

import numpy as np
import torch
from numpy.typing import NDArray

from app.boxes import Box, pixel_span
from app.engine.registry import Registry

__all__ = [
    "LOCALISATION_SCORES",
    "LocalisationScore",
    "PreparedMap",
    "box_mask",
    "prepare_map",
    "score_boxes",
]


LOCALISATION_SCORES: Registry[type[LocalisationScore]] = Registry("localisation score")


class PreparedMap:
    """One heat map, flattened, with the per-map quantities the scores share (computed once).

    Made by :func:`prepare_map`; keep one beside its map to score moved boxes again without
    redoing the map's own work (its ranks are a sort of every pixel).
    """

    def __init__(self, heat: NDArray[np.float64]) -> None:
        self.height, self.width = heat.shape
        self.values = heat.reshape(-1)

    @cached_property
    def peak(self) -> NDArray[np.bool_]:
        peak: NDArray[np.bool_] = self.values == self.values.max()
        return peak

    @cached_property
    def positive(self) -> NDArray[np.float64]:
        return np.maximum(self.values, 0.0)

    @cached_property
    def positive_total(self) -> float:
        return float(self.positive.sum())

    @cached_property
    def ordered(self) -> NDArray[np.float64]:
        """The values in ascending order: every k-th largest value and count above a cut
        read from it, instead of a partition of the whole map per box."""
        return np.sort(self.values)

    @cached_property
    def ranks(self) -> NDArray[np.float64]:
        """1-based ranks, ties given their average: scipy's ``rankdata(method="average")``
        to the bit, 4–5× faster (numpy's unstable argsort, ties found on the sorted values;
        scipy sorts stably)."""
        order = np.argsort(self.values)
        ordered = self.ordered  # = values[order]: ties are equal values
        first = np.empty(ordered.size, dtype=bool)
        first[0] = True
        np.not_equal(ordered[1:], ordered[:-1], out=first[1:])
        starts = np.flatnonzero(first)
        ends = np.append(starts[1:], ordered.size)
        ranks = np.empty(ordered.size, dtype=np.float64)
        ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
        return ranks

    def kth_largest(self, k: int) -> float:
        return float(self.ordered[self.ordered.size - k])

    def count_above(self, cut: float) -> tuple[int, int]:
        """How many values are above ``cut`` and how many equal it."""
        below_or_equal = int(np.searchsorted(self.ordered, cut, side="right"))
        below = int(np.searchsorted(self.ordered, cut, side="left"))
        return self.ordered.size - below_or_equal, below_or_equal - below


def prepare_map(heat: torch.Tensor | NDArray[np.floating[Any]]) -> PreparedMap:
    """The raw ``H×W`` heat map at image size, checked and ready for :func:`score_boxes`.

    Raises:
        ValueError: the map is not 2-D, empty or not finite.
    """
    return PreparedMap(_as_map(heat))


class LocalisationScore(ABC):
    """One score of a heat map against a box mask; options are keyword arguments.

    Subclasses set :attr:`higher_is_better`, list the options they read in :attr:`options`
    (with defaults) and implement :meth:`compute`.
    """

    name: ClassVar[str]
    higher_is_better: ClassVar[bool] = True
    options: ClassVar[Mapping[str, Any]] = {}

    def __init__(self, **options: Any) -> None:
        self.settings = {**self.options, **options}

    @abstractmethod
    def compute(self, heat: PreparedMap, mask: NDArray[np.bool_]) -> float:
        """The score of the map against one non-empty box mask (flattened, ``H·W``)."""


def box_mask(box: Box, height: int, width: int) -> NDArray[np.bool_]:
    """The ``H×W`` mask of pixels whose centres lie inside ``box`` (half-open)."""
    mask = np.zeros((height, width), dtype=bool)
    left, right = pixel_span(box.x, box.w)
    top, bottom = pixel_span(box.y, box.h)
    mask[max(top, 0) : max(bottom, 0), max(left, 0) : max(right, 0)] = True
    return mask


def score_boxes(
    heat: torch.Tensor | NDArray[np.floating[Any]] | PreparedMap,
    boxes: Sequence[Box],
    scores: Sequence[str] | None = None,
    **options: Any,
) -> list[dict[str, float]]:
    """Score a heat map at image size against each box.

    Args:
        heat: the raw ``H×W`` heat map at image size, or :func:`prepare_map`'s of it.
        boxes: boxes in image pixels (``x, y, w, h``).
        scores: names in :data:`LOCALISATION_SCORES`; default all of them.
        **options: options of the chosen scores (``k``, ``concept_influence``,
            ``threshold``, ``threshold_mode``).

    Returns:
        One ``{score name: value}`` per box, in order (``auc`` may be NaN, see the module).

    Raises:
        KeyError: an unknown score name.
        ValueError: the map is not 2-D or not finite, an option is unknown or out of range,
            or a box covers no pixel centre.
    """
    names = list(LOCALISATION_SCORES) if scores is None else list(scores)
    for name in names:
        LOCALISATION_SCORES.lookup(name)
    known = {key for cls in LOCALISATION_SCORES.values() for key in cls.options}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(f"unknown option {unknown[0]!r}; options are {', '.join(sorted(known))}")
    prepared = heat if isinstance(heat, PreparedMap) else prepare_map(heat)
    impls = {
        name: LOCALISATION_SCORES[name](
            **{k: v for k, v in options.items() if k in LOCALISATION_SCORES[name].options}
        )
        for name in names
    }
    results = []
    for index, box in enumerate(boxes):
        mask = box_mask(box, prepared.height, prepared.width).reshape(-1)
        if not mask.any():
            raise ValueError(
                f"box {index} ({box.x}, {box.y}, {box.w}, {box.h}) covers no pixel centre of "
                f"the {prepared.width}×{prepared.height} map; make it at least one pixel wide "
                "and tall, inside the image"
            )
        results.append({name: impl.compute(prepared, mask) for name, impl in impls.items()})
    return results


def _as_map(heat: torch.Tensor | NDArray[np.floating[Any]]) -> NDArray[np.float64]:
    if isinstance(heat, torch.Tensor):
        heat = heat.detach().cpu().to(torch.float64).numpy()
    values = np.asarray(heat, dtype=np.float64)
    if values.ndim != 2 or values.size == 0:
        raise ValueError(f"expected an H×W heat map at image size, got shape {values.shape}")
    if not np.isfinite(values).all():
        raise ValueError("the heat map has NaN or infinite values; recompute it")
    return values


def _top_share(heat: PreparedMap, mask: NDArray[np.bool_], k: int) -> float:
    """Expected number of the ``k`` highest pixels inside ``mask``, ties broken at random."""
    cut = heat.kth_largest(k)
    above, tied = heat.count_above(cut)
    inside = heat.values[mask]  # the box's pixels only, not passes over the whole map
    places = k - above
    inside_tied = int((inside == cut).sum())
    return float((inside > cut).sum()) + places * inside_tied / tied


@LOCALISATION_SCORES.register("pointing_game")
class _PointingGame(LocalisationScore):
    def compute(self, heat: PreparedMap, mask: NDArray[np.bool_]) -> float:
        return float(bool((heat.peak & mask).any()))


@LOCALISATION_SCORES.register("energy")
class _Energy(LocalisationScore):
    def compute(self, heat: PreparedMap, mask: NDArray[np.bool_]) -> float:
        if heat.positive_total == 0.0:
            return 0.0
        return float(heat.positive[mask].sum()) / heat.positive_total


@LOCALISATION_SCORES.register("relevance_rank")
class _RelevanceRank(LocalisationScore):
    def compute(self, heat: PreparedMap, mask: NDArray[np.bool_]) -> float:
        size = int(mask.sum())
        return _top_share(heat, mask, size) / size


@LOCALISATION_SCORES.register("top_k_intersection")
class _TopK(LocalisationScore):
    options = {"k": 1000, "concept_influence": False}

    def compute(self, heat: PreparedMap, mask: NDArray[np.bool_]) -> float:
        pixels = heat.values.size
        k = min(int(self.settings["k"]), pixels)
        if k < 1:
            raise ValueError(f"top_k_intersection needs k ≥ 1, got {self.settings['k']}")
        share = _top_share(heat, mask, k) / k
        if self.settings["concept_influence"]:
            share *= pixels / int(mask.sum())
        return share


@LOCALISATION_SCORES.register("auc")
class _Auc(LocalisationScore):
    def compute(self, heat: PreparedMap, mask: NDArray[np.bool_]) -> float:
        inside = int(mask.sum())
        outside = mask.size - inside
        if outside == 0:
            return math.nan
        rank_sum = float(heat.ranks[mask].sum())
        return (rank_sum - inside * (inside + 1) / 2) / (inside * outside)


@LOCALISATION_SCORES.register("iou")
class _Iou(LocalisationScore):
    options = {"threshold": 0.5, "threshold_mode": "fraction"}

    def compute(self, heat: PreparedMap, mask: NDArray[np.bool_]) -> float:
        threshold = float(self.settings["threshold"])
        mode = self.settings["threshold_mode"]
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"iou threshold must lie in [0, 1], got {threshold}")
        if mode == "fraction":
            peak = float(heat.values.max())
            if peak <= 0.0:
                return 0.0
            kept = heat.values >= threshold * peak
        elif mode == "quantile":
            kept = heat.values >= np.quantile(heat.values, threshold)
        else:
            raise ValueError(f"unknown threshold_mode {mode!r}; use 'fraction' or 'quantile'")
        union = int((kept | mask).sum())
        return int((kept & mask).sum()) / union
