"""Descriptors of stored boxes at chosen layers: read from the feature store, the missing
ones extracted in batches and stored."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from app.config import Settings
from app.engine.models import LoadedModel
from app.engine.preprocess import InputMode
from app.engine.regions import Descriptor
from app.errors import LimitExceeded
from app.service.extraction import extract_boxes, feature_sets, stored_box
from app.store import BoxRecord, ImageRecord, Store

__all__ = ["LimitExceeded", "box_descriptors", "check_limits", "boxes_key"]


def check_limits(
    settings: Settings, *, samples: int = 0, layers: int = 0, permutations: int = 0
) -> None:
    """Refuse requests past the settings' limits, naming the setting and its value.

    Raises:
        LimitExceeded: too many samples, layers or permutations.
    """
    for value, name in (
        (samples, "max_samples_per_request"),
        (layers, "max_layers_per_request"),
        (permutations, "max_permutations"),
    ):
        limit = int(getattr(settings, name))
        if value > limit:
            raise LimitExceeded(
                f"{value} {name.removeprefix('max_').replace('_per_request', '')} is more than "
                f"{name} = {limit} (setting FEATUREGAP_{name.upper()}); ask for fewer"
            )


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

    Descriptors come from the store's feature store when it holds them for this model,
    weights, layer, descriptor, grid size, input mode, image and box geometry; the rest are
    extracted in batches (:func:`app.service.extraction.extract_boxes`, only the boxes'
    regions brought to the image grid, never whole maps) and stored for the next time.

    Args:
        store: where the images and stored descriptors are.
        model: the loaded model.
        boxes: the boxes (of any images).
        layers: feature-map layer names.
        kind: ``gap`` (one ``C`` vector per box), ``grid`` (one ``C·s²`` vector) or
            ``pixels`` (``s²×C`` samples per box).
        grid_size: ``s`` for ``grid`` and ``pixels``.
        mode: input mode of the model.
        progress: called with a fraction in ``[0, 1]`` and a message.
        cancelled: polled between batches; when it returns True the work stops.

    Returns:
        ``{layer: [descriptor per box]}`` (float32).

    Raises:
        KeyError: an unknown layer. ValueError: a bad descriptor kind or grid size.
        JobCancelled: ``cancelled()`` became true.
    """

    def scaled(fraction: float, message: str) -> None:
        if progress is not None:
            progress(fraction * 0.8, message)

    # Read first: when every descriptor is stored (the common case once extracted) this is
    # the whole lookup, one matrix per layer read from the segment files.
    sets = feature_sets(store, model, layers, kind, grid_size, mode)
    images = store.get_images({b.image_id for b in boxes})
    keys = [stored_box(b, images[b.image_id]) for b in boxes]
    stored = {layer: store.features.read_rows(sets[layer], keys) for layer in sets}
    unstored = [
        b
        for b, *found in zip(boxes, *(f for _, f in stored.values()), strict=True)
        if not all(found)
    ]
    fresh: dict[str, dict[int, torch.Tensor]] = {layer: {} for layer in sets}
    if unstored:
        _, fresh = extract_boxes(
            store,
            model,
            unstored,
            layers,
            kind,
            grid_size,
            mode,
            progress=scaled,
            cancelled=cancelled,
            keep=True,
        )
    out: dict[str, list[torch.Tensor]] = {}
    for layer, feature_set in sets.items():
        values, found = stored[layer]
        computed = fresh[layer]
        # stored by another request between the read and the extraction: read them too
        rest = [i for i in np.flatnonzero(~found).tolist() if boxes[i].id not in computed]
        if rest:
            again, there = store.features.read_rows(feature_set, [keys[i] for i in rest])
            values[rest], found[rest] = again, there
            rest = [i for i, ok in zip(rest, there.tolist(), strict=True) if not ok]
        if rest:  # edited or deleted between the lookup and the read: compute them now
            _, lost = extract_boxes(
                store,
                model,
                [boxes[i] for i in rest],
                [layer],
                kind,
                grid_size,
                mode,
                cancelled=cancelled,
                keep=True,
                force=True,
            )
            computed = {**computed, **lost[layer]}
        for i in np.flatnonzero(~found).tolist():
            values[i] = computed[boxes[i].id].reshape(-1).numpy()
        # one matrix, handed out as a view per box: no copy and no Python work per box
        matrix = torch.from_numpy(values)
        if kind == "pixels":
            matrix = matrix.view(len(boxes), feature_set.rows_per_box, feature_set.width)
        out[layer] = list(matrix.unbind(0))
    return out
