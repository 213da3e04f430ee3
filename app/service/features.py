"""Descriptors of stored boxes at chosen layers, from one forward pass through the cache."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from app.boxes import Box
from app.config import Settings
from app.engine.features import default_cache, extract
from app.engine.models import LoadedModel
from app.engine.preprocess import InputMode
from app.engine.regions import Descriptor, region_descriptors
from app.errors import LimitExceeded
from app.jobs import JobCancelled
from app.service.heatmaps import ENGINE_LOCK
from app.store import BoxRecord, ImageRecord, Store

__all__ = ["LimitExceeded", "box_descriptors", "check_limits", "boxes_key"]


def check_limits(settings: Settings, *, samples: int = 0, layers: int = 0,
                 permutations: int = 0) -> None:
    """Refuse requests past the settings' limits, naming the setting and its value.

    Raises:
        LimitExceeded: too many samples, layers or permutations.
    """
    for value, name in ((samples, "max_samples_per_request"),
                        (layers, "max_layers_per_request"),
                        (permutations, "max_permutations")):
        limit = int(getattr(settings, name))
        if value > limit:
            raise LimitExceeded(
                f"{value} {name.removeprefix('max_').replace('_per_request', '')} is more than "
                f"{name} = {limit} (setting FEATUREGAP_{name.upper()}); ask for fewer")


def boxes_key(boxes: Sequence[BoxRecord], images: dict[int, ImageRecord]) -> list[list[Any]]:
    """What identifies the boxes' content in a cache key: id, image hash, coordinates, label."""
    return [[b.id, images[b.image_id].sha256, b.x, b.y, b.w, b.h, b.label] for b in boxes]


def box_descriptors(
    store: Store,
    model: LoadedModel,
    boxes: Sequence[BoxRecord],
    layers: Sequence[str],
    kind: Descriptor = "gap",
    grid_size: int = 4,
    mode: InputMode = "resize",
    progress: Callable[[float, str], None] | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> dict[str, list[torch.Tensor]]:
    """Every box's descriptor at every layer, in the order of ``boxes``.

    Images are extracted once for all layers, through the engine's feature cache; only the
    boxes' regions are brought to the image grid (``roi_align``), never whole maps.

    Args:
        store: where the images are.
        model: the loaded model.
        boxes: the boxes (of any images).
        layers: feature-map layer names.
        kind: ``gap`` (one ``C`` vector per box), ``grid`` (one ``C·s²`` vector) or
            ``pixels`` (``s²×C`` samples per box).
        grid_size: ``s`` for ``grid`` and ``pixels``.
        mode: input mode of the model.
        progress: called with a fraction in ``[0, 1]`` and a message.
        cancelled: polled between images; when it returns True the work stops.

    Returns:
        ``{layer: [descriptor per box]}``.

    Raises:
        KeyError: an unknown layer. ValueError: a bad descriptor kind or grid size.
        JobCancelled: ``cancelled()`` became true.
    """
    by_image: dict[int, list[int]] = {}
    for index, box in enumerate(boxes):
        by_image.setdefault(box.image_id, []).append(index)
    out: dict[str, list[torch.Tensor]] = {layer: [torch.empty(0)] * len(boxes)
                                          for layer in layers}
    cache = default_cache(store.settings.feature_cache_bytes)
    for done, (image_id, indices) in enumerate(by_image.items()):
        if cancelled is not None and cancelled():
            raise JobCancelled("cancelled")
        image = store.get_image(image_id)
        decoded = store.load_decoded(image)
        with ENGINE_LOCK:
            maps = extract(model, [decoded], layers, mode=mode, cache=cache,
                           native_max_side=store.settings.native_max_side)[0]
        chosen = [Box(boxes[i].x, boxes[i].y, boxes[i].w, boxes[i].h) for i in indices]
        for layer in layers:
            regions = region_descriptors(maps[layer], (image.width, image.height), chosen,
                                         kind, grid_size)
            for i, region in zip(indices, regions, strict=True):
                out[layer][i] = region
        if progress is not None:
            progress((done + 1) / len(by_image) * 0.8, f"features of {done + 1} images")
    return out
