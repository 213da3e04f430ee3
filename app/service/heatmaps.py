"""Heat maps of stored images, scored against their stored boxes, with the prediction.

A request's answer is cached in the store's results table under a key made of the image's
hash, the model and its weights, the layer, method, target, input mode, display
normalisation and every box of the image (id, coordinates, label): adding, moving or
relabelling a box changes the key, so a stale answer is never served. Only answers that ran
the network are stored: one rescored from a raw map still in memory (a box moved) is cheaper
to compute again than to write. Label colours are never taken from the cache: they change
whenever labels are added or renamed anywhere in the store, so the figure's boxes are
repainted with the current palette each time the answer is served. The raw heat map is also
kept in a small in-process LRU, so re-scoring after a box edit costs no forward pass.

Long heat maps run as jobs: :func:`estimate_heatmap_work` says a request's work units (none
when its map or answer is kept already), and :func:`heatmap_result` takes the job's
``progress`` (Score-CAM's ``batch k of K``, then scoring) and ``cancelled`` (asked between
Score-CAM's batches).
"""

from __future__ import annotations

import csv
import io
import math
import threading
from dataclasses import dataclass, field
from typing import Any, Literal

from app.boxes import Box
from app.config import Settings
from app.engine.cams import CamOptions
from app.engine.cams.base import check_target
from app.engine.features import LOGITS, default_cache, extract
from app.engine.heatmaps import HeatMap, compute_heatmap, normalise
from app.engine.layers import check_layer
from app.engine.localisation import LOCALISATION_SCORES, PreparedMap, prepare_map, score_boxes
from app.engine.models import LoadedModel
from app.engine.predictions import predict_from_logits
from app.engine.preprocess import InputMode
from app.jobs import Cancelled, Progress, current_cancelled
from app.lru import LRU
from app.palette import UNKNOWN, label_colours
from app.plots import OverlayMap, heatmap_figure, heatmap_with_colours, overlay_map
from app.service.budgets import Estimate
from app.service.estimates import heatmap_budget
from app.service.resolution import resolution_warnings
from app.service.results import cached, result_key
from app.store import BoxRecord, ImageRecord, Store

__all__ = [
    "ENGINE_LOCK",
    "HeatmapRequest",
    "estimate_heatmap_work",
    "heatmap_png",
    "heatmap_result",
    "raw_heatmap",
    "scores_csv",
]

Normalise = Literal["none", "minmax", "percentile"]
_MAP_SHARE = 0.9
"""The share of a fresh heat map's progress that its map takes; scores, the prediction and
the figure take the rest."""

_SCALING = {"minmax": "min-max scaled, 0..1", "percentile": "/ 99th pct, -1..1", "none": "raw"}
"""The display scaling in words, for the colour bar's title."""

_MAPS: LRU[tuple[Any, ...], HeatMap] = LRU(32)


@dataclass
class _View:
    """What moving a box leaves as it was: the map prepared for scoring (its ranks, peak,
    positive part), its range and its overlay per display normalisation."""

    heat: HeatMap
    prepared: PreparedMap
    heat_range: list[float]
    overlays: dict[str, OverlayMap] = field(default_factory=dict)

    def overlay(self, how: Normalise) -> OverlayMap:
        """The overlay of the map normalised ``how`` (made once per normalisation)."""
        found = self.overlays.get(how)
        if found is None:
            found = self.overlays[how] = overlay_map(normalise(self.heat.values, how))
        return found


_VIEW_BYTES_PER_PIXEL = 8 * 4 + 1 + 4
"""A view holds the map, its sorted values, ranks and positive part in float64, its peak
mask, and keeps the float32 map itself alive (the overlays are small)."""

_VIEWS: LRU[tuple[Any, ...], _View] = LRU(
    256 * 2**20, size=lambda view: view.prepared.values.size * _VIEW_BYTES_PER_PIXEL
)

ENGINE_LOCK = threading.Lock()
"""Serialises the service's model runs: torch already uses every core for one, so running two
at once only doubles peak memory. (Safety under concurrency is the engine's own business:
``app.engine.graph.TRACE_LOCK``.)"""


@dataclass(frozen=True)
class HeatmapRequest:
    """What to compute for one image."""

    model: str
    layer: str
    method: str
    target: int | None = None
    mode: InputMode = "resize"
    normalise: Normalise = "minmax"
    channel: int | None = None
    options: tuple[tuple[str, Any], ...] = ()
    """The method's validated options (``app.engine.cams.method_options``), sorted pairs."""


def _map_key(model: LoadedModel, image: ImageRecord, request: HeatmapRequest) -> tuple[Any, ...]:
    """What determines the raw map (not its display normalisation)."""
    return (
        model.spec.name,
        model.weights_sha256,
        image.sha256,
        request.layer,
        request.method,
        request.target,
        request.mode,
        request.channel,
        request.options,
    )


def _view(
    store: Store,
    model: LoadedModel,
    image: ImageRecord,
    request: HeatmapRequest,
    progress: Progress | None = None,
    cancelled: Cancelled | None = None,
) -> _View:
    """The raw map with what scoring and drawing it again need, from memory when kept."""
    heat = raw_heatmap(store, model, image, request, progress, cancelled)
    key = _map_key(model, image, request)
    found = _VIEWS.get(key)
    if found is None or found.heat is not heat:  # the map was computed again meanwhile
        prepared = prepare_map(heat.values)
        # the same numbers in float64, read without a torch parallel region (which waits for
        # a second core on a busy machine)
        found = _View(heat, prepared, [float(prepared.values.min()), float(prepared.values.max())])
        _VIEWS.put(key, found)
    return found


def raw_heatmap(
    store: Store,
    model: LoadedModel,
    image: ImageRecord,
    request: HeatmapRequest,
    progress: Progress | None = None,
    cancelled: Cancelled | None = None,
) -> HeatMap:
    """The raw heat map at image size, from the in-process LRU or computed.

    Args:
        store: the store holding the image.
        model: the loaded model.
        image: the image.
        request: what to compute.
        progress: told ``(fraction, message)`` at the method's steps (Score-CAM: before
            each batch), the fraction scaled to the map's share of the whole answer.
        cancelled: asked between Score-CAM's batches; default: the pool's check of the
            work running on this thread.

    Raises:
        KeyError: unknown layer or method (the message lists valid ones).
        ValueError: a target or channel out of range, or ``cam`` on an unfit layer.
        InterruptedError: the work running it was cancelled (Score-CAM checks between
            batches).
        LimitExceeded: its memory estimate is past ``max_request_bytes`` (checked before
            the image is decoded).
    """
    key = _map_key(model, image, request)
    found = _MAPS.get(key)
    if found is not None:
        return found
    options = CamOptions(**dict(request.options))
    _budget(store.settings, model, image, request, options)
    decoded = store.load_decoded(image)
    with ENGINE_LOCK:
        # Score-CAM stops between batches when the job or the pool's caller is cancelled
        heat = compute_heatmap(
            model,
            decoded,
            request.layer,
            request.method,
            request.target,
            request.mode,
            request.channel,
            options=options,
            native_max_side=store.settings.native_max_side,
            cancelled=cancelled or current_cancelled(),
            progress=_scaled(progress, _MAP_SHARE),
        )
    _MAPS.put(key, heat)
    return heat


def _scaled(progress: Progress | None, share: float) -> Progress | None:
    """``progress`` with its fractions scaled to ``share`` of the whole."""
    if progress is None:
        return None
    report = progress

    def scaled(fraction: float, message: str) -> None:
        report(share * fraction, message)

    return scaled


def _top_k(
    store: Store, model: LoadedModel, image: ImageRecord, mode: InputMode, k: int = 5
) -> list[dict[str, Any]]:
    decoded = store.load_decoded(image)
    with ENGINE_LOCK:
        outputs = extract(
            model,
            [decoded],
            [],
            mode=mode,
            cache=default_cache(store.settings.feature_cache_bytes),
            with_logits=True,
            native_max_side=store.settings.native_max_side,
        )
    logits = outputs[0][LOGITS]
    return [
        {"index": p.index, "label": p.label, "probability": p.probability}
        for p in predict_from_logits(model, logits, k)
    ]


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def heatmap_result(
    store: Store,
    model: LoadedModel,
    image: ImageRecord,
    request: HeatmapRequest,
    boxes: list[BoxRecord],
    progress: Progress | None = None,
    cancelled: Cancelled | None = None,
) -> dict[str, Any]:
    """Scores of every box, the top-5 prediction, the target explained and the figure.

    Args:
        store: the store holding the image.
        model: the loaded model.
        image: the image.
        request: model, layer, method, target, mode and display normalisation.
        boxes: the image's boxes (all of them, in id order).
        progress: a job's progress: the map's steps (see :func:`raw_heatmap`), then
            scoring; ``None`` when it runs in a request.
        cancelled: asked between Score-CAM's batches (see :func:`raw_heatmap`).

    Returns:
        A JSON-safe dict: ``image_id``, ``model``, ``layer``, ``method``, ``target``,
        ``target_label``, ``prediction`` (top 5), ``boxes`` (each with ``scores``; NaN
        scores are ``null``), ``score_names``, ``heat_range`` (raw min, max) and ``figure``.

    Raises:
        KeyError: unknown layer or method.
        ValueError: bad target, channel or normalisation.
        InterruptedError: ``cancelled`` returned ``True``.
    """
    # With the raw map in memory an answer is only rescoring (about 1 ms); storing it would
    # cost ~10 ms (a 230 kB row per box position, and the WAL checkpoints those rows bring)
    # and grow the database with every box move. Answers that ran the network are stored.
    rescored = _MAPS.get(_map_key(model, image, request)) is not None
    answer = cached(
        store,
        "heatmap",
        _payload(model, image, request, boxes),
        lambda: _heatmap_answer(store, model, image, request, boxes, progress, cancelled),
        image_id=image.id,
        keep=not rescored,
    )
    labels = [str(b["label"]) for b in answer["boxes"]]
    figure = heatmap_with_colours(answer["figure"], labels, label_colours(store.labels()))
    return {**answer, "figure": figure}


def _payload(
    model: LoadedModel, image: ImageRecord, request: HeatmapRequest, boxes: list[BoxRecord]
) -> dict[str, Any]:
    """What keys a heat-map answer in the results cache."""
    return {
        "image": image.sha256,
        "model": model.spec.name,
        "weights": model.weights_sha256,
        "request": request.__dict__,
        "boxes": [[b.id, b.x, b.y, b.w, b.h, b.label] for b in boxes],
    }


def estimate_heatmap_work(
    store: Store,
    settings: Settings,
    model: LoadedModel,
    image: ImageRecord,
    request: HeatmapRequest,
    boxes: list[BoxRecord],
) -> Estimate:
    """The memory and work units of a heat-map request, before any work: none when its raw
    map is kept in memory or its answer in the results cache (rescoring and serving are
    quick), else its forward passes' (Score-CAM's grow with its channels).

    Raises:
        LimitExceeded: past ``max_request_bytes``.
        ValueError: a target past the model's classes (a 422 now, not a failed job).
    """
    if _MAPS.get(_map_key(model, image, request)) is not None:
        return Estimate("heat map")
    classes = len(model.spec.class_names)
    if request.target is not None and classes:
        check_target(request.target, classes)
    if store.has_result(result_key("heatmap", _payload(model, image, request, boxes))):
        return Estimate("heat map")
    return _budget(settings, model, image, request, CamOptions(**dict(request.options)))


def _budget(
    settings: Settings,
    model: LoadedModel,
    image: ImageRecord,
    request: HeatmapRequest,
    options: CamOptions,
) -> Estimate:
    """The request's memory and work estimate; refused past the settings' limits."""
    return heatmap_budget(
        settings,
        model,
        image,
        method=request.method,
        mode=request.mode,
        batch_size=options.batch_size,
        max_batch_pixels=options.max_batch_pixels,
        layer=request.layer,
        max_channels=options.max_channels,
    )


def _heatmap_answer(
    store: Store,
    model: LoadedModel,
    image: ImageRecord,
    request: HeatmapRequest,
    boxes: list[BoxRecord],
    progress: Progress | None = None,
    cancelled: Cancelled | None = None,
) -> dict[str, Any]:
    view = _view(store, model, image, request, progress, cancelled)
    if progress is not None:
        progress(_MAP_SHARE, "scores, top-5 prediction and figure")
    heat = view.heat
    scored = score_boxes(view.prepared, [Box(b.x, b.y, b.w, b.h) for b in boxes]) if boxes else []
    box_out = [
        {
            "id": b.id,
            "x": b.x,
            "y": b.y,
            "w": b.w,
            "h": b.h,
            "label": b.label,
            "scores": {name: _finite(v) for name, v in s.items()},
        }
        for b, s in zip(boxes, scored, strict=True)
    ]
    title = f"{request.method} · {request.layer}" + (
        f" · {heat.target_label or heat.target}" if heat.target is not None else ""
    )
    figure = heatmap_figure(
        view.overlay(request.normalise),
        box_out,
        image_url=f"/api/images/{image.id}/file",
        title=title,  # box colours are painted when served (heatmap_result)
        colorbar_title=f"{request.method}"
        + (f" {request.channel}" if request.channel is not None else "")
        + f" ({_SCALING[request.normalise]})",
    )
    return {
        "image_id": image.id,
        "model": model.spec.name,
        "layer": heat.layer,
        "method": heat.method,
        "target": heat.target,
        "target_label": heat.target_label,
        "mode": request.mode,
        "normalise": request.normalise,
        "prediction": _top_k(store, model, image, request.mode),
        "score_names": list(LOCALISATION_SCORES),
        "boxes": box_out,
        "heat_range": list(view.heat_range),
        "figure": figure,
        "warnings": resolution_warnings(
            model,
            check_layer(model, request.layer),
            {image.id: image},
            boxes,
            request.mode,
            store.settings.native_max_side,
        ),
    }


def scores_csv(result: dict[str, Any]) -> str:
    """The per-box scores of a :func:`heatmap_result` as CSV (one row per box).

    Labels starting with ``= + - @`` get a leading ``'`` so spreadsheets don't run them.
    """
    names: list[str] = result["score_names"]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(
        [
            "image_id",
            "box_id",
            "label",
            "x",
            "y",
            "w",
            "h",
            "model",
            "layer",
            "method",
            "target",
            *names,
        ]
    )
    for box in result["boxes"]:
        label = str(box["label"])
        if label[:1] in ("=", "+", "-", "@"):
            label = "'" + label
        writer.writerow(
            [
                result["image_id"],
                box["id"],
                label,
                box["x"],
                box["y"],
                box["w"],
                box["h"],
                result["model"],
                result["layer"],
                result["method"],
                "" if result["target"] is None else result["target"],
                *("" if box["scores"].get(n) is None else repr(box["scores"][n]) for n in names),
            ]
        )
    return out.getvalue()


def heatmap_png(
    store: Store,
    model: LoadedModel,
    image: ImageRecord,
    request: HeatmapRequest,
    boxes: list[BoxRecord],
    alpha: float = 0.5,
) -> bytes:
    """The overlay as PNG: the map (normalised for display) over the image, boxes captioned
    with their label and energy.

    Raises:
        KeyError: unknown layer or method. ValueError: bad target, channel or alpha.
    """
    from app.engine.overlay import render_overlay

    result = heatmap_result(store, model, image, request, boxes)
    heat = raw_heatmap(store, model, image, request)
    captions = [
        f"{b['label']} E={b['scores']['energy']:.2f}"
        if b["scores"].get("energy") is not None
        else str(b["label"])
        for b in result["boxes"]
    ]
    palette = label_colours(store.labels())  # the page's colours for the same labels
    picture = render_overlay(
        store.load_decoded(image).pixels,
        normalise(heat.values, request.normalise),
        [Box(b.x, b.y, b.w, b.h) for b in boxes],
        captions,
        alpha,
        [palette.get(b.label, UNKNOWN) for b in boxes],
    )
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()
