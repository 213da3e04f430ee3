"""What moved between two models on the same boxes: separation per layer under both (one
figure), the distance matrices with p-values of both, and both scatters — all computed by
:mod:`app.service.analysis`, nothing re-implemented."""

from __future__ import annotations

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
from app.store import BoxRecord, Store

__all__ = ["default_layers", "moved"]


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
) -> dict[str, Any]:
    """What moved between two models on the same boxes: separation per layer for both (one
    figure), and at ``layer`` the distance matrix and its p-values for both.

    Args:
        before: the base model. after: the trained one (same architecture).
        groups: the boxes per label (held-out boxes, typically).
        layers: the layers of the separation profile. layer: the distance matrices' layer.
        measure: the distance matrices' measure (``None``: no matrices).
        permutations: for the matrices' p-values (0: none).
        descriptor: the matrices' descriptor (default: what the measure consumes; the
            training's own MMD uses ``gap``, the pooled box features its loss aligns).

    Returns:
        JSON-safe: ``layers`` (per layer: ratio and silhouette before/after),
        ``separation`` (both answers), ``distances`` (both, or absent), ``mmd``
        (before/after when ``measure`` is ``mmd``), ``scatter`` (both, or absent),
        ``figure``.

    Raises:
        ValueError: fewer than two groups; what the analyses raise.
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
    return out


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
