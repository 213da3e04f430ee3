"""Distances between groups of stored boxes and separation across layers.

Groups are explicit lists of box ids or every box of some labels. Each answer is cached in
the store's results table under a key holding every box's id, image hash, coordinates and
label, so any edit to a box gives a new key.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch

from app.config import Settings
from app.engine.analysis import distance_matrix, layer_profile
from app.engine.measures import MEASURES, Measure, get_measure
from app.engine.models import LoadedModel
from app.engine.preprocess import InputMode
from app.engine.regions import Descriptor
from app.jobs import JobCancelled
from app.plots import distance_matrix_figure, embedding_figure, separation_figure, to_json_safe
from app.service.features import box_descriptors, boxes_key, check_limits
from app.service.results import result_key
from app.store import BoxRecord, ImageRecord, Store

__all__ = ["DistanceRequest", "SeparationRequest", "resolve_groups", "distances",
           "separation_profile", "distance_work", "separation_work", "EmbeddingRequest",
           "embedding", "embedding_work"]

Progress = Callable[[float, str], None]
Cancelled = Callable[[], bool]


@dataclass(frozen=True)
class DistanceRequest:
    """A measure between groups of boxes at one layer."""

    model: str
    layer: str
    measure: str
    descriptor: Descriptor | None = None
    grid_size: int = 4
    options: dict[str, Any] = field(default_factory=dict)
    permutations: int = 0
    seed: int = 0
    mode: InputMode = "resize"


@dataclass(frozen=True)
class SeparationRequest:
    """Intra- vs inter-label distances at several layers (``pixels``: each box is its set
    of grid rows, compared set to set)."""

    model: str
    layers: list[str]
    measure: str = "euclidean"
    descriptor: Descriptor = "gap"
    grid_size: int = 4
    mode: InputMode = "resize"
    options: dict[str, Any] = field(default_factory=dict)


def resolve_groups(store: Store, groups: Mapping[str, Sequence[int]] | None,
                   labels: Sequence[str] | None) -> dict[str, list[BoxRecord]]:
    """Boxes per group: the given ids per name, or every box of each label (all labels
    when both are ``None``).

    Raises:
        KeyError: an unknown box id.
        ValueError: an empty group or a label without boxes.
    """
    if groups is not None:
        out = {name: store.boxes(ids=ids) for name, ids in groups.items()}
    else:
        wanted = list(labels) if labels is not None else list(store.labels())
        found = store.boxes(labels=wanted)
        out = {label: [b for b in found if b.label == label] for label in wanted}
    for name, members in out.items():
        if not members:
            raise ValueError(f"group {name!r} has no boxes; draw boxes with this label or "
                             "list box ids (GET /api/boxes)")
    return out


def _images(store: Store, boxes: Sequence[BoxRecord]) -> dict[int, ImageRecord]:
    return {i: store.get_image(i) for i in {b.image_id for b in boxes}}


def distance_work(request: DistanceRequest, n_boxes: int) -> int:
    """Work units of a distance request (boxes × draws), compared with the job threshold."""
    return n_boxes * max(1, request.permutations)


def separation_work(request: SeparationRequest, n_boxes: int) -> int:
    """Work units of a separation request: boxes × layers where the measure has a
    vectorised :meth:`~app.engine.measures.Measure.pairwise`, else pairs of boxes × layers
    (each pair is one call of the measure: set measures, ``pixels``, mutual information).

    Raises:
        KeyError: an unknown measure.
    """
    cls = MEASURES.lookup(request.measure)
    if request.descriptor != "pixels" and cls.pairwise is not Measure.pairwise:
        return n_boxes * len(request.layers)
    return max(n_boxes, n_boxes * (n_boxes - 1) // 2) * len(request.layers)


def distances(store: Store, settings: Settings, model: LoadedModel,
              groups: dict[str, list[BoxRecord]], request: DistanceRequest,
              progress: Progress | None = None,
              cancelled: Cancelled | None = None) -> dict[str, Any]:
    """The measure between every pair of groups, with permutation p-values when asked.

    Returns:
        JSON-safe: ``labels``, ``matrix``, ``p_values`` (or ``None``), ``measure``,
        ``higher_is_better``, ``descriptor``, ``layer``, ``sizes`` and ``figure``.

    Raises:
        KeyError: unknown measure or layer. ValueError: fewer than 2 groups, a group too
        small for the measure, bad options. LimitExceeded: past a settings limit.
    """
    measure = get_measure(request.measure, **request.options)
    if len(groups) < 2:
        raise ValueError(f"distances need at least 2 groups, got {len(groups)}; give two "
                         "labels or two lists of box ids")
    every = [b for members in groups.values() for b in members]
    check_limits(settings, samples=len(every), permutations=request.permutations)
    descriptor: Descriptor = request.descriptor or measure.needs
    images = _images(store, every)
    key = result_key("distances", {
        "model": model.spec.name, "weights": model.weights_sha256,
        "request": asdict(request) | {"descriptor": descriptor},
        "groups": {name: boxes_key(members, images) for name, members in groups.items()},
    })
    cached = store.get_result(key)
    if cached is not None:
        result: dict[str, Any] = cached
        return result
    features = box_descriptors(store, model, every, [request.layer], descriptor,
                               request.grid_size, request.mode, progress, cancelled)[
        request.layer]
    samples: dict[str, torch.Tensor] = {}
    start = 0
    for name, members in groups.items():
        chunk = features[start:start + len(members)]
        start += len(members)
        rows = torch.cat([c.reshape(-1, c.shape[-1]) for c in chunk]) if descriptor == \
            "pixels" else torch.stack([c.reshape(-1) for c in chunk])
        if rows.shape[0] < measure.min_rows:
            raise ValueError(
                f"group {name!r} gives {rows.shape[0]} sample(s) as {descriptor!r}; "
                f"{request.measure} needs at least {measure.min_rows} per group: add boxes "
                "or use descriptor 'pixels'")
        samples[name] = rows
    if cancelled is not None and cancelled():
        raise JobCancelled()
    if progress is not None:
        progress(0.85, "measuring")
    matrix = distance_matrix(samples, measure, permutations=request.permutations,
                             seed=request.seed)
    values = matrix.values.tolist()
    p_values = None if matrix.p_values is None else matrix.p_values.tolist()
    result = to_json_safe({
        "labels": matrix.labels, "matrix": values, "p_values": p_values,
        "measure": request.measure, "higher_is_better": matrix.higher_is_better,
        "between": measure.between, "descriptor": descriptor,
        "layer": request.layer, "model": model.spec.name, "permutations": request.permutations,
        "sizes": {name: len(members) for name, members in groups.items()},
        "figure": distance_matrix_figure(matrix.labels, values, p_values,
                                         measure=request.measure,
                                         higher_is_better=matrix.higher_is_better),
    })
    store.put_result(key, "distances", result)
    return result


def separation_profile(store: Store, settings: Settings, model: LoadedModel,
                       groups: dict[str, list[BoxRecord]], request: SeparationRequest,
                       progress: Progress | None = None,
                       cancelled: Cancelled | None = None) -> dict[str, Any]:
    """Intra/inter/ratio/silhouette per layer, from one forward pass for all layers.

    Returns:
        JSON-safe: ``layers`` (each ``{layer, intra, inter, ratio, silhouette, per_label}``),
        ``measure``, ``descriptor`` and ``figure``.

    Raises:
        KeyError: unknown layer or measure. ValueError: fewer than 2 labels, no label with 2
        boxes, bad options or what the measure raises. LimitExceeded: past a settings limit.
    """
    measure = get_measure(request.measure, **request.options)
    if not request.layers:
        raise ValueError("give at least one layer")
    if len(groups) < 2:
        raise ValueError(f"separation needs at least 2 different labels with boxes, got "
                         f"{len(groups)}; draw boxes with two or more labels")
    every = [b for members in groups.values() for b in members]
    labels = [name for name, members in groups.items() for _ in members]
    check_limits(settings, samples=len(every), layers=len(request.layers))
    images = _images(store, every)
    key = result_key("separation", {
        "model": model.spec.name, "weights": model.weights_sha256, "request": asdict(request),
        "groups": {name: boxes_key(members, images) for name, members in groups.items()},
    })
    cached = store.get_result(key)
    if cached is not None:
        result: dict[str, Any] = cached
        return result
    features = box_descriptors(store, model, every, request.layers, request.descriptor,
                               request.grid_size, request.mode, progress, cancelled)
    per_layer: dict[str, tuple[torch.Tensor | list[torch.Tensor], list[str]]] = {
        layer: ([f.reshape(-1, f.shape[-1]) for f in features[layer]]
                if request.descriptor == "pixels"
                else torch.stack([f.reshape(-1) for f in features[layer]]), labels)
        for layer in request.layers}
    if progress is not None:
        progress(0.85, "measuring")
    profile = layer_profile(per_layer, measure)
    rows = [{"layer": layer, "intra": s.intra, "inter": s.inter, "ratio": s.ratio,
             "silhouette": s.silhouette,
             "per_label": {k: {"intra": v.intra, "inter": v.inter}
                           for k, v in s.per_label.items()}}
            for layer, s in profile]
    result = to_json_safe({
        "layers": rows, "measure": request.measure, "descriptor": request.descriptor,
        "model": model.spec.name, "sizes": {name: len(m) for name, m in groups.items()},
        "figure": separation_figure(
            [layer for layer, _ in profile], [s.intra for _, s in profile],
            [s.inter for _, s in profile],
            [s.ratio if math.isfinite(s.ratio) else math.nan for _, s in profile],
            measure=request.measure, silhouette=[s.silhouette for _, s in profile]),
    })
    store.put_result(key, "separation", result)
    return result


@dataclass(frozen=True)
class EmbeddingRequest:
    """A 2-D map of box descriptors at one layer."""

    model: str
    layer: str
    method: Literal["tsne", "pca"] = "tsne"
    perplexity: float | None = None
    seed: int = 0
    descriptor: Literal["gap", "grid"] = "gap"
    grid_size: int = 4
    mode: InputMode = "resize"


def embedding_work(request: EmbeddingRequest, n_boxes: int) -> int:
    """Work units of an embedding (boxes; t-SNE counts ten times PCA)."""
    return n_boxes * (10 if request.method == "tsne" else 1)


def embedding(store: Store, settings: Settings, model: LoadedModel, boxes: list[BoxRecord],
              request: EmbeddingRequest, progress: Progress | None = None,
              cancelled: Cancelled | None = None) -> dict[str, Any]:
    """t-SNE or PCA of one descriptor per box.

    Returns:
        JSON-safe: ``points`` (``{box_id, image_id, label, x, y}`` in the boxes' order),
        ``method``, ``perplexity``, ``layer`` and ``figure``.

    Raises:
        KeyError: unknown layer. ValueError: too few boxes, perplexity out of range.
        LimitExceeded: past a settings limit.
    """
    from app.engine.embed import embed

    if len(boxes) < 2:
        raise ValueError(f"an embedding needs at least 2 boxes, got {len(boxes)}; draw more "
                         "boxes or choose other labels or ids")
    check_limits(settings, samples=len(boxes))
    images = _images(store, boxes)
    key = result_key("embedding", {
        "model": model.spec.name, "weights": model.weights_sha256, "request": asdict(request),
        "boxes": boxes_key(boxes, images)})
    cached = store.get_result(key)
    if cached is not None:
        result: dict[str, Any] = cached
        return result
    features = box_descriptors(store, model, boxes, [request.layer], request.descriptor,
                               request.grid_size, request.mode, progress, cancelled)
    x = torch.stack([f.reshape(-1) for f in features[request.layer]])
    if progress is not None:
        progress(0.85, f"{request.method} of {len(boxes)} boxes")
    xy = embed(x, request.method, perplexity=request.perplexity, seed=request.seed,
               cancelled=cancelled)
    points = [{"box_id": b.id, "image_id": b.image_id, "label": b.label,
               "x": float(p[0]), "y": float(p[1])} for b, p in zip(boxes, xy, strict=True)]
    result = to_json_safe({
        "points": points, "method": request.method, "perplexity": request.perplexity,
        "layer": request.layer, "model": model.spec.name, "descriptor": request.descriptor,
        "figure": embedding_figure(points, method=request.method),
    })
    store.put_result(key, "embedding", result)
    return result
