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
from app.engine.analysis import layer_profile
from app.engine.inference import (
    Adjustment,
    Group,
    IntervalMethod,
    MatrixTests,
    evaluations,
    matrix_tests,
)
from app.engine.layers import check_layer
from app.engine.measures import MEASURES, Measure, get_measure
from app.engine.models import LoadedModel
from app.engine.preprocess import InputMode
from app.engine.regions import Descriptor
from app.errors import InvalidInput, NotFound
from app.palette import label_colours
from app.plots import (
    distance_matrix_figure,
    embedding_figure,
    embedding_with_colours,
    separation_figure,
    to_json_safe,
)
from app.service import budgets
from app.service.budgets import Estimate, check_budget
from app.service.estimates import extraction_of
from app.service.features import box_descriptors, boxes_key, check_limits
from app.service.resolution import resolution_warnings
from app.service.results import cached
from app.store import BoxRecord, ImageRecord, Store

__all__ = [
    "DistanceRequest",
    "SeparationRequest",
    "resolve_groups",
    "distances",
    "separation_profile",
    "distance_work",
    "separation_work",
    "EmbeddingRequest",
    "embedding",
    "embedding_work",
    "estimate_distances",
    "estimate_separation",
    "estimate_embedding",
]

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
    bootstrap: int = 0
    unit: Literal["auto", "image", "box"] = "auto"
    adjust: Adjustment = "holm"
    alpha: float = 0.05
    interval_method: IntervalMethod | Literal["auto"] = "auto"


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


def resolve_groups(
    store: Store, groups: Mapping[str, Sequence[int]] | None, labels: Sequence[str] | None
) -> dict[str, list[BoxRecord]]:
    """Boxes per group: the given ids per name, or every box of each label (all labels
    when both are ``None``).

    Raises:
        KeyError: an unknown box id.
        ValueError: an empty group or a label without boxes.
    """
    if groups is not None:
        # one query for every group; each group's boxes in id order, as store.boxes gives
        found_by_id = {
            b.id: b
            for b in store.boxes(ids=[i for ids in groups.values() for i in ids], missing_ok=True)
        }
        out: dict[str, list[BoxRecord]] = {}
        for name, ids in groups.items():
            sorted_ids = sorted({int(i) for i in ids})
            missing = [i for i in sorted_ids if i not in found_by_id]
            if missing:
                raise KeyError(f"no boxes with ids {missing}; GET /api/boxes lists them")
            out[name] = [found_by_id[i] for i in sorted_ids]
    else:
        wanted = list(labels) if labels is not None else list(store.labels())
        found = store.boxes(labels=wanted)
        out = {label: [b for b in found if b.label == label] for label in wanted}
    for name, members in out.items():
        if not members:
            raise ValueError(
                f"group {name!r} has no boxes; draw boxes with this label or "
                "list box ids (GET /api/boxes)"
            )
    return out


def _images(store: Store, boxes: Sequence[BoxRecord]) -> dict[int, ImageRecord]:
    return store.get_images({b.image_id for b in boxes})  # one query (no box counts)


def _members(groups: Mapping[str, Sequence[BoxRecord]]) -> list[BoxRecord]:
    """Every box of every group, in the groups' order."""
    return [b for members in groups.values() for b in members]


@dataclass(frozen=True)
class _Run:
    """What one analysis runs with: the store, the model, and its job's progress and
    cancel hooks (``None`` when it runs in a request)."""

    store: Store
    model: LoadedModel
    progress: Progress | None
    cancelled: Cancelled | None

    def descriptors(
        self,
        boxes: Sequence[BoxRecord],
        layers: Sequence[str],
        descriptor: Descriptor,
        request: DistanceRequest | SeparationRequest | EmbeddingRequest,
        then: str,
    ) -> dict[str, list[torch.Tensor]]:
        """The boxes' descriptors on the request's grid and input mode; then says ``then``."""
        features = box_descriptors(
            self.store,
            self.model,
            boxes,
            layers,
            descriptor,
            request.grid_size,
            request.mode,
            self.progress,
            self.cancelled,
        )
        if self.progress is not None:
            self.progress(0.85, then)
        return features

    def answer(
        self,
        kind: str,
        request: dict[str, Any],
        boxes: Mapping[str, Sequence[BoxRecord]] | Sequence[BoxRecord],
        answer: Callable[[dict[int, ImageRecord]], dict[str, Any]],
    ) -> dict[str, Any]:
        """The stored ``kind`` answer of ``request``, or ``answer(images)`` made JSON-safe
        and stored, keyed by the model's name and weights, the request and the content of
        its ``boxes`` (per group, or one list; see :func:`boxes_key`)."""
        every = _members(boxes) if isinstance(boxes, Mapping) else list(boxes)
        images = _images(self.store, every)
        payload = {
            "model": self.model.spec.name,
            "weights": self.model.weights_sha256,
            "request": request,
            **(
                {"groups": {name: boxes_key(group, images) for name, group in boxes.items()}}
                if isinstance(boxes, Mapping)
                else {"boxes": boxes_key(every, images)}
            ),
        }

        def compute() -> dict[str, Any]:
            made: dict[str, Any] = to_json_safe(answer(images))
            return made

        return cached(self.store, kind, payload, compute)


def distance_work(request: DistanceRequest, n_boxes: int) -> int:
    """Work units of a distance request (boxes × (draws + evaluations of the bootstrap: a
    studentized interval evaluates each resample's inner resamples too)), compared with the
    job threshold."""
    return n_boxes * max(1, request.permutations + _bootstrap_evaluations(request))


def _bootstrap_evaluations(request: DistanceRequest) -> int:
    if MEASURES.lookup(request.measure).interval_refusal is not None:
        return 0  # the measure gives no interval: none is computed
    return evaluations(_interval_method(request), request.bootstrap)


def estimate_distances(
    store: Store,
    settings: Settings,
    model: LoadedModel,
    request: DistanceRequest,
    groups: dict[str, list[BoxRecord]],
) -> Estimate:
    """Memory and work units of a distances request, before any work.

    Raises:
        KeyError: unknown measure or layer. ValueError: bad options.
        LimitExceeded: the estimate is past ``max_request_bytes`` (named).
    """
    every = _members(groups)
    return check_budget(
        settings,
        budgets.estimate_distances(
            extraction=extraction_of(store, settings, model, every, request.mode),
            measure=request.measure,
            options=request.options,
            descriptor=request.descriptor or MEASURES.lookup(request.measure).needs,
            channels=check_layer(model, request.layer).channels,
            grid_size=request.grid_size,
            group_sizes=[len(m) for m in groups.values()],
            permutations=request.permutations,
            bootstrap=_bootstrap_evaluations(request),
            units=distance_work(request, len(every)),
        ),
    )


def estimate_separation(
    store: Store,
    settings: Settings,
    model: LoadedModel,
    request: SeparationRequest,
    groups: dict[str, list[BoxRecord]],
) -> Estimate:
    """Memory and work units of a separation request, before any work.

    Raises:
        KeyError: unknown measure or layer. LimitExceeded: past ``max_request_bytes``.
    """
    every = _members(groups)
    return check_budget(
        settings,
        budgets.estimate_separation(
            extraction=extraction_of(store, settings, model, every, request.mode),
            measure=request.measure,
            options=request.options,
            descriptor=request.descriptor,
            channels=[check_layer(model, layer).channels for layer in request.layers],
            grid_size=request.grid_size,
            n_boxes=len(every),
            units=separation_work(request, len(every)),
        ),
    )


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


def _group_rows(
    descriptor: Descriptor, members: Sequence[BoxRecord], features: Sequence[torch.Tensor]
) -> Group:
    """A group's rows (``pixels``: every grid sample of every box) with their box and image."""
    if descriptor != "pixels":  # one row a box: one stack, no Python work per box
        if len(features) != len(members):
            raise ValueError(f"{len(features)} descriptors for {len(members)} boxes")
        rows = torch.stack(list(features)).reshape(len(features), -1)
        return Group(rows, tuple(b.id for b in members), tuple(b.image_id for b in members))
    parts = [f.reshape(-1, f.shape[-1]) for f in features]
    boxes = tuple(b.id for b, part in zip(members, parts, strict=True) for _ in range(len(part)))
    images = tuple(
        b.image_id for b, part in zip(members, parts, strict=True) for _ in range(len(part))
    )
    return Group(torch.cat(parts), boxes, images)


def _require_unchanged(store: Store, every: Sequence[BoxRecord]) -> None:
    """Refuse to finish an answer whose boxes or images vanished or moved meanwhile.

    Raises:
        NotFound: boxes deleted or changed while the work ran (named).
    """
    now = {b.id: b for b in store.boxes(ids=[b.id for b in every], missing_ok=True)}
    gone = [b.id for b in every if b.id not in now]
    moved = [b.id for b in every if b.id in now and now[b.id] != b]
    if gone or moved:
        said = "; ".join(
            part
            for part in (
                f"deleted meanwhile: box(es) {gone[:10]}" if gone else "",
                f"changed meanwhile: box(es) {moved[:10]}" if moved else "",
            )
            if part
        )
        raise NotFound(f"the boxes of this analysis changed while it ran ({said}); run it again")


def _family(tested: int) -> str:
    """The pairs whose p-values were adjusted together, in words."""
    if tested == 0:
        return "no pair of this matrix: none has enough units for a p-value"
    return f"the {tested} pair{'s' if tested > 1 else ''} of this matrix with a p-value"


def _tests_json(tests: MatrixTests, k: int) -> dict[str, Any]:
    def grid(attr: str) -> list[list[float | None]]:
        out: list[list[float | None]] = [[None] * k for _ in range(k)]
        for t in tests.tests:
            out[t.i][t.j] = out[t.j][t.i] = getattr(t, attr)
        return out

    tested = [t for t in tests.tests if t.p_value is not None]
    return {
        "p_values": grid("p_value") if tests.tests else None,
        "p_adjusted": grid("p_adjusted") if tests.tests else None,
        "adjustment": {
            "method": tests.adjustment,
            "family": _family(len(tested)),
        },
        "unit": tests.unit,
        "tests": [
            {
                "a": tests.labels[t.i],
                "b": tests.labels[t.j],
                "statistic": t.statistic,
                "p_value": t.p_value,
                "p_adjusted": t.p_adjusted,
                "min_p": t.min_p,
                "exact": t.exact,
                "permutations": t.permutations,
                "interval": None
                if t.interval is None
                else {
                    "low": t.interval.low,
                    "high": t.interval.high,
                    "level": t.interval.level,
                    "resamples": t.interval.resamples,
                    "method": t.interval.method,
                },
            }
            for t in tests.tests
        ],
        "groups": {
            name: {"units": e.units, "rows": e.rows, "icc": e.icc, "ess": e.ess}
            for name, e in tests.effective.items()
        },
    }


def _interval_method(request: DistanceRequest) -> IntervalMethod:
    """The interval asked for, or (``auto``) the measure's own default."""
    if request.interval_method != "auto":
        return request.interval_method
    return MEASURES.lookup(request.measure).interval_method


def distances(
    store: Store,
    settings: Settings,
    model: LoadedModel,
    groups: dict[str, list[BoxRecord]],
    request: DistanceRequest,
    progress: Progress | None = None,
    cancelled: Cancelled | None = None,
) -> dict[str, Any]:
    """The measure between every pair of groups, with unit-level tests when asked.

    Tests and bootstrap intervals exchange or resample whole units (images, or boxes when
    no image gives a group several boxes), never rows: see :mod:`app.engine.inference`.

    Returns:
        JSON-safe: ``labels``, ``matrix``, ``p_values`` and ``p_adjusted`` (or ``None``),
        ``tests`` (one per pair), ``unit``, ``adjustment``, ``groups`` (units, rows, ICC,
        effective size per group), ``warnings``, ``measure``, ``higher_is_better``,
        ``descriptor``, ``layer``, ``sizes`` and ``figure``.

    Raises:
        KeyError: unknown measure or layer. ValueError: fewer than 2 groups, a group too
        small for the measure, bad options. LimitExceeded: past a settings limit.
        NotFound: boxes deleted or changed while the work ran.
    """
    measure = get_measure(request.measure, **request.options)
    if len(groups) < 2:
        raise ValueError(
            f"distances need at least 2 groups, got {len(groups)}; give two "
            "labels or two lists of box ids"
        )
    every = _members(groups)
    check_limits(
        settings, samples=len(every), permutations=max(request.permutations, request.bootstrap)
    )
    descriptor: Descriptor = request.descriptor or measure.needs
    estimate_distances(store, settings, model, request, groups)
    run = _Run(store, model, progress, cancelled)

    def answer(images: dict[int, ImageRecord]) -> dict[str, Any]:
        found = run.descriptors(every, [request.layer], descriptor, request, "measuring")
        features = found[request.layer]
        samples: dict[str, Group] = {}
        start = 0
        for name, members in groups.items():
            samples[name] = _group_rows(descriptor, members, features[start : start + len(members)])
            start += len(members)
            if samples[name].rows.shape[0] < measure.min_rows:
                raise ValueError(
                    f"group {name!r} gives {samples[name].rows.shape[0]} sample(s) as "
                    f"{descriptor!r}; {request.measure} needs at least {measure.min_rows} "
                    "per group: add boxes or use descriptor 'pixels'"
                )
        tests = matrix_tests(
            samples,
            measure,
            permutations=request.permutations,
            bootstrap=request.bootstrap,
            seed=request.seed,
            alpha=request.alpha,
            unit=None if request.unit == "auto" else request.unit,
            adjustment=request.adjust,
            interval_method=_interval_method(request),
            cancelled=cancelled,
        )
        _require_unchanged(store, every)
        k = len(tests.labels)
        values = tests.values.tolist()
        tested = _tests_json(tests, k)
        warnings = resolution_warnings(
            model,
            check_layer(model, request.layer),
            images,
            every,
            request.mode,
            settings.native_max_side,
        )
        shown = tested["p_adjusted"]
        return {
            "labels": tests.labels,
            "matrix": values,
            **tested,
            "warnings": warnings + tests.warnings,
            "measure": request.measure,
            "higher_is_better": tests.higher_is_better,
            "between": measure.between,
            "descriptor": descriptor,
            "layer": request.layer,
            "model": model.spec.name,
            "permutations": request.permutations,
            "bootstrap": request.bootstrap,
            "sizes": {name: len(members) for name, members in groups.items()},
            "images": {
                name: len({b.image_id for b in members}) for name, members in groups.items()
            },
            "figure": distance_matrix_figure(
                tests.labels,
                values,
                None
                if shown is None
                else [[math.nan if v is None else v for v in row] for row in shown],
                measure=request.measure,
                higher_is_better=tests.higher_is_better,
            ),
        }

    return run.answer("distances", asdict(request) | {"descriptor": descriptor}, groups, answer)


def separation_profile(
    store: Store,
    settings: Settings,
    model: LoadedModel,
    groups: dict[str, list[BoxRecord]],
    request: SeparationRequest,
    progress: Progress | None = None,
    cancelled: Cancelled | None = None,
) -> dict[str, Any]:
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
        raise ValueError(
            f"separation needs at least 2 different labels with boxes, got "
            f"{len(groups)}; draw boxes with two or more labels"
        )
    every = _members(groups)
    labels = [name for name, members in groups.items() for _ in members]
    check_limits(settings, samples=len(every), layers=len(request.layers))
    estimate_separation(store, settings, model, request, groups)
    run = _Run(store, model, progress, cancelled)

    def answer(_images: dict[int, ImageRecord]) -> dict[str, Any]:
        features = run.descriptors(every, request.layers, request.descriptor, request, "measuring")
        per_layer: dict[str, tuple[torch.Tensor | list[torch.Tensor], list[str]]] = {
            layer: (
                [f.reshape(-1, f.shape[-1]) for f in features[layer]]
                if request.descriptor == "pixels"
                else torch.stack([f.reshape(-1) for f in features[layer]]),
                labels,
            )
            for layer in request.layers
        }
        profile = layer_profile(per_layer, measure)
        rows = [
            {
                "layer": layer,
                "intra": s.intra,
                "inter": s.inter,
                "ratio": s.ratio,
                "silhouette": s.silhouette,
                "per_label": {
                    k: {"intra": v.intra, "inter": v.inter} for k, v in s.per_label.items()
                },
            }
            for layer, s in profile
        ]
        return {
            "layers": rows,
            "measure": request.measure,
            "descriptor": request.descriptor,
            "model": model.spec.name,
            "sizes": {name: len(m) for name, m in groups.items()},
            "figure": separation_figure(
                [layer for layer, _ in profile],
                [s.intra for _, s in profile],
                [s.inter for _, s in profile],
                [s.ratio if math.isfinite(s.ratio) else math.nan for _, s in profile],
                measure=request.measure,
                silhouette=[s.silhouette for _, s in profile],
            ),
        }

    return run.answer("separation", asdict(request), groups, answer)


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
    n_iter: int = 500


def embedding_work(request: EmbeddingRequest, n_boxes: int) -> int:
    """Work units of an embedding (boxes; t-SNE at its default 500 iterations counts ten
    times PCA, and in proportion to its iterations)."""
    if request.method != "tsne":
        return n_boxes
    return n_boxes * max(1, 10 * request.n_iter // 500)


def estimate_embedding(
    store: Store,
    settings: Settings,
    model: LoadedModel,
    boxes: Sequence[BoxRecord],
    request: EmbeddingRequest,
) -> Estimate:
    """Memory and work units of an embedding request, before any work.

    Raises:
        KeyError: unknown layer. LimitExceeded: past ``max_request_bytes``.
        InvalidInput: too few boxes for the method, or a perplexity out of range for
            this many boxes.
    """
    from app.engine.embed import max_perplexity

    n = len(boxes)
    least = 4 if request.method == "tsne" else 2
    if n < least:
        raise InvalidInput(
            f"{request.method} needs at least {least} boxes, got {n}; draw more "
            "boxes or choose other labels or ids"
            + ("; or use method 'pca'" if request.method == "tsne" else "")
        )
    if (
        request.method == "tsne"
        and request.perplexity is not None
        and not (0 < request.perplexity <= max_perplexity(n))
    ):
        raise InvalidInput(
            f"perplexity {request.perplexity} is out of range for {n} boxes; "
            f"use a value in (0, {max_perplexity(n):.3g}] ((n − 1)/3), or omit "
            "it for min(30, (n − 1)/3)"
        )
    return check_budget(
        settings,
        budgets.estimate_embedding(
            extraction=extraction_of(store, settings, model, boxes, request.mode),
            method=request.method,
            descriptor=request.descriptor,
            channels=check_layer(model, request.layer).channels,
            grid_size=request.grid_size,
            n_boxes=len(boxes),
            units=embedding_work(request, len(boxes)),
        ),
    )


def embedding(
    store: Store,
    settings: Settings,
    model: LoadedModel,
    boxes: list[BoxRecord],
    request: EmbeddingRequest,
    progress: Progress | None = None,
    cancelled: Cancelled | None = None,
) -> dict[str, Any]:
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
        raise ValueError(
            f"an embedding needs at least 2 boxes, got {len(boxes)}; draw more "
            "boxes or choose other labels or ids"
        )
    check_limits(settings, samples=len(boxes))
    estimate_embedding(store, settings, model, boxes, request)
    run = _Run(store, model, progress, cancelled)

    def answer(_images: dict[int, ImageRecord]) -> dict[str, Any]:
        then = f"{request.method} of {len(boxes)} boxes"
        features = run.descriptors(boxes, [request.layer], request.descriptor, request, then)
        x = torch.stack([f.reshape(-1) for f in features[request.layer]])
        xy = embed(
            x,
            request.method,
            perplexity=request.perplexity,
            seed=request.seed,
            n_iter=request.n_iter,
            threads=torch.get_num_threads(),
            cancelled=cancelled,
        )
        points = [
            {
                "box_id": b.id,
                "image_id": b.image_id,
                "label": b.label,
                "x": float(p[0]),
                "y": float(p[1]),
            }
            for b, p in zip(boxes, xy, strict=True)
        ]
        return {
            "points": points,
            "method": request.method,
            "perplexity": request.perplexity,
            "layer": request.layer,
            "model": model.spec.name,
            "descriptor": request.descriptor,
            # repainted when served: the palette changes as labels come and go
            "figure": embedding_figure(points, method=request.method),
        }

    found = run.answer("embedding", asdict(request), boxes, answer)
    labels = sorted({str(p["label"]) for p in found["points"]})
    painted = embedding_with_colours(found["figure"], labels, label_colours(store.labels()))
    return {**found, "figure": painted}
