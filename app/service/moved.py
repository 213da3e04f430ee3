"""What moved between two models on the same boxes: separation per layer under both (one
figure), the distance matrices with p-values of both, and both scatters — all computed by
:mod:`app.service.analysis`, nothing re-implemented."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

from app.config import Settings
from app.engine.layers import list_layers
from app.engine.models import LoadedModel
from app.engine.preprocess import InputMode
from app.engine.regions import Descriptor
from app.jobs import Cancelled
from app.service.analysis import (
    DistanceRequest,
    EmbeddingRequest,
    SeparationRequest,
    distances,
    embedding,
    separation_profile,
)
from app.service.heatmaps import HeatmapRequest, heatmap_result
from app.store import BoxRecord, Store

__all__ = ["HeatmapChoice", "default_layers", "moved"]


@dataclass(frozen=True)
class HeatmapChoice:
    """The heat maps of one image under both models: same method, layer and class.

    Attributes:
        method: a heat-map method (``GET /api/heatmap-methods``).
        layer: default: the matrices' layer.
        image_id: default: the image holding most of the compared boxes (lowest id on ties).
        target: the class both maps explain; default: the base model's top class on the
            image (so both explain the same one, even where the trained model's top differs).
    """

    method: str = "gradcam"
    layer: str | None = None
    image_id: int | None = None
    target: int | None = None


def default_layers(model: LoadedModel, *required: str | None) -> list[str]:
    """The last layer of each spatial size above 1×1 (each stage's end) plus ``required``,
    in network order."""
    layers = list_layers(model)
    ends = {(x.height, x.width): x.name for x in layers if x.height * x.width > 1}
    wanted = set(ends.values()) | {r for r in required if r is not None}
    return [x.name for x in layers if x.name in wanted]


def _profile(
    store: Store,
    settings: Settings,
    model: LoadedModel,
    groups: dict[str, list[BoxRecord]],
    layers: list[str],
    mode: InputMode,
    cancelled: Cancelled | None,
) -> dict[str, Any]:
    request = SeparationRequest(model.spec.name, layers, "euclidean", "gap", mode=mode)
    return separation_profile(store, settings, model, groups, request, cancelled=cancelled)


def moved(
    store: Store,
    settings: Settings,
    before: LoadedModel,
    after: LoadedModel,
    groups: dict[str, list[BoxRecord]],
    layers: list[str],
    layer: str,
    measure: str | None = "euclidean",
    mode: InputMode = "resize",
    cancelled: Cancelled | None = None,
    permutations: int = 0,
    descriptor: Descriptor | None = None,
    options: dict[str, Any] | None = None,
    scatter: Literal["pca", "tsne"] | None = None,
    heatmap: HeatmapChoice | None = None,
) -> dict[str, Any]:
    """What moved between two models on the same boxes: separation per layer for both (one
    figure), at ``layer`` the distance matrix and its p-values for both, the scatter of
    both, and the heat maps of one image under both.

    Args:
        before: the base model. after: the trained one (same architecture).
        groups: the boxes per label (held-out boxes, typically).
        layers: the layers of the separation profile. layer: the distance matrices' layer.
        measure: the distance matrices' measure (``None``: no matrices).
        permutations: for the matrices' p-values (0: none).
        descriptor: the matrices' descriptor (default: what the measure consumes; the
            training's own MMD uses ``gap``, the pooled box features its loss aligns).
        scatter: the scatters' method (``None``: no scatter).
        heatmap: which heat maps (``None``: none).

    Returns:
        JSON-safe: ``layers`` (per layer: ratio and silhouette before/after),
        ``separation`` (both answers), ``distances`` (both, or absent), ``mmd``
        (before/after when ``measure`` is ``mmd``), ``scatter`` (both, or absent),
        ``heatmaps`` (``image_id``, ``filename``, ``layer``, ``method``, ``target``,
        ``target_label`` and both answers of ``POST /api/heatmaps``, or absent), ``figure``.

    Raises:
        ValueError: fewer than two groups; what the analyses raise.
        KeyError: an unknown layer, heat-map method or image.
    """
    sep = {
        "before": _profile(store, settings, before, groups, layers, mode, cancelled),
        "after": _profile(store, settings, after, groups, layers, mode, cancelled),
    }
    rows = []
    for b, a in zip(sep["before"]["layers"], sep["after"]["layers"], strict=True):
        rows.append(
            {
                "layer": b["layer"],
                "ratio_before": b["ratio"],
                "ratio_after": a["ratio"],
                "silhouette_before": b["silhouette"],
                "silhouette_after": a["silhouette"],
            }
        )
    out: dict[str, Any] = {
        "before": before.spec.name,
        "after": after.spec.name,
        "layers": rows,
        "separation": sep,
        "figure": _both_figure(sep["before"]["figure"], sep["after"]["figure"], before, after),
    }
    if measure is not None:
        dist = {}
        for key, model in (("before", before), ("after", after)):
            request = DistanceRequest(
                model.spec.name,
                layer,
                measure,
                descriptor=descriptor,
                options=dict(options or {}),
                mode=mode,
                permutations=permutations,
            )
            dist[key] = distances(store, settings, model, groups, request, cancelled=cancelled)
        out["distances"] = dist
        if measure == "mmd" and len(groups) == 2:
            out["mmd"] = {k: v["matrix"][0][1] for k, v in dist.items()}
    if scatter is not None:
        every = [b for members in groups.values() for b in members]
        out["scatter"] = {
            key: embedding(
                store,
                settings,
                model,
                every,
                EmbeddingRequest(model.spec.name, layer, scatter, mode=mode),
                cancelled=cancelled,
            )
            for key, model in (("before", before), ("after", after))
        }
    if heatmap is not None:
        out["heatmaps"] = _heatmaps(store, before, after, groups, layer, mode, heatmap)
    return out


def _heatmaps(
    store: Store,
    before: LoadedModel,
    after: LoadedModel,
    groups: dict[str, list[BoxRecord]],
    layer: str,
    mode: InputMode,
    choice: HeatmapChoice,
) -> dict[str, Any]:
    """One image's heat maps under both models, scored on all of the image's boxes."""
    image_id = choice.image_id
    if image_id is None:
        counts: dict[int, int] = {}
        for members in groups.values():
            for box in members:
                counts[box.image_id] = counts.get(box.image_id, 0) + 1
        image_id = min(counts, key=lambda i: (-counts[i], i))
    image = store.get_image(image_id)
    boxes = store.boxes(image_id=image.id)
    request = HeatmapRequest(
        before.spec.name, choice.layer or layer, choice.method, choice.target, mode
    )
    first = heatmap_result(store, before, image, request, boxes)
    # the class the base model explains, fixed for the trained model too
    second = heatmap_result(
        store, after, image, replace(request, model=after.spec.name, target=first["target"]), boxes
    )
    return {
        "image_id": image.id,
        "filename": image.filename,
        "layer": first["layer"],
        "method": first["method"],
        "target": first["target"],
        "target_label": first["target_label"],
        "before": first,
        "after": second,
    }


def _both_figure(
    before: dict[str, Any], after: dict[str, Any], a: LoadedModel, b: LoadedModel
) -> dict[str, Any]:
    """The two separation figures as one: the base model's traces dashed."""
    data = []
    for fig, model, dash in ((before, a, "dash"), (after, b, "solid")):
        for trace in fig.get("data", []):
            line = dict(trace.get("line") or {})
            line["dash"] = dash
            data.append(
                {
                    **trace,
                    "name": f"{trace.get('name', '')} · {model.spec.name}",
                    "line": line,
                    "legendgroup": model.spec.name,
                }
            )
    layout = dict(after.get("layout", {}))
    layout["title"] = {"text": f"What moved: {a.spec.name} (dashed) vs {b.spec.name}"}
    return {"data": data, "layout": layout}
