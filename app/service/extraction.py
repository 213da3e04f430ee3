"""Batched extraction of box descriptors into the store's feature store.

Only boxes whose descriptor is missing (for this model, weights, layer, descriptor, grid
size, input mode, image hash and box geometry) are extracted. Their images are decoded and
preprocessed by a thread pool a batch at a time, forwarded ``batch_size`` at a time
(``native`` mode: images of one input size per batch), and each box's region is taken and
written to the store (in large segments). The three steps take turns, each with every core:
run side by side on a small machine they preempt torch's intra-op threads during the
forward and cost more wall time than the overlap saves.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from app.boxes import Box
from app.engine.features import forward_maps, prepare_input
from app.engine.layers import check_layer
from app.engine.models import LoadedModel
from app.engine.preprocess import InputMode, input_size
from app.engine.regions import Descriptor, batch_region_descriptors
from app.jobs import JobCancelled
from app.service.heatmaps import ENGINE_LOCK
from app.store import BoxRecord, ImageRecord, Store
from app.store.features import FeatureSet, FeatureStore, StoredBox

__all__ = [
    "ExtractionPlan",
    "ExtractionReport",
    "extract_boxes",
    "feature_sets",
    "plan_extraction",
    "stored_box",
]

Progress = Callable[[float, str], None]
_SEGMENT_BYTES = 32 * 1024 * 1024  # a segment file holds up to this many descriptor bytes


@dataclass(frozen=True)
class ExtractionReport:
    """What an extraction did (:func:`extract_boxes`, the Ray backend, and the result of an
    extraction job, ``GET /api/jobs/{job_id}``).

    ``extracted`` and ``present`` count box × layer descriptors; ``images`` the images
    forwarded.
    """

    boxes: int
    layers: int
    images: int
    extracted: int
    present: int
    seconds: float


# How the forward pass ran, part of a feature set's key: since batch norms are folded into
# the convolutions (app.engine.fold), descriptors differ from the unfolded pass's by float32
# rounding (~3e-6 of the largest value); a store's older sets are not mixed with new ones.
_FORWARD = "bn-folded"


def mode_key(mode: InputMode, native_max_side: int) -> str:
    """The input mode as the feature store keys it (``native`` depends on its size cap),
    with how the forward ran (:data:`_FORWARD`)."""
    base = mode if mode == "resize" else f"native@{native_max_side}"
    return f"{base}+{_FORWARD}"


def feature_sets(
    store: Store,
    model: LoadedModel,
    layers: Sequence[str],
    kind: Descriptor,
    grid_size: int,
    mode: InputMode,
) -> dict[str, FeatureSet]:
    """The feature set of each layer (created when new).

    Raises:
        KeyError: an unknown layer. ValueError: a bad descriptor kind or grid size.
    """
    if kind not in ("gap", "grid", "pixels"):
        raise ValueError(f"unknown descriptor {kind!r}; use 'gap', 'grid' or 'pixels'")
    if grid_size < 1:
        raise ValueError(f"grid_size must be at least 1, got {grid_size}")
    out = {}
    for layer in dict.fromkeys(layers):
        channels = check_layer(model, layer).channels
        cells = grid_size * grid_size
        rows, width = {
            "gap": (1, channels),
            "grid": (1, channels * cells),
            "pixels": (cells, channels),
        }[kind]
        out[layer] = store.features.feature_set(
            model=model.spec.name,
            weights_sha256=model.weights_sha256,
            layer=layer,
            descriptor=kind,
            grid_size=grid_size,
            mode=mode_key(mode, store.settings.native_max_side),
            rows_per_box=rows,
            width=width,
        )
    return out


def stored_box(box: BoxRecord, image: ImageRecord) -> StoredBox:
    """The key of a box's descriptor besides its feature set."""
    return StoredBox(box.id, image.sha256, box.x, box.y, box.w, box.h)


@dataclass(frozen=True)
class ExtractionPlan:
    """Which descriptors an extraction computes, as both backends plan it.

    Attributes:
        sets: each layer's feature set.
        images: the boxes' images by id.
        keys: each box's key in the feature store, by box id.
        boxes: the boxes, each once.
        missing: per layer, the ids of the boxes whose descriptor is to be computed.
        present: box × layer descriptors already stored (0 when forced).
        needed: the layers with something missing.
        by_image: the boxes with something missing, by image id.
    """

    sets: dict[str, FeatureSet]
    images: dict[int, ImageRecord]
    keys: dict[int, StoredBox]
    boxes: list[BoxRecord]
    missing: dict[str, set[int]]
    present: int
    needed: list[str]
    by_image: dict[int, list[BoxRecord]]

    def report(self, seconds: float) -> ExtractionReport:
        """The report of this plan carried out in ``seconds``."""
        return ExtractionReport(
            boxes=len(self.boxes),
            layers=len(self.sets),
            images=len(self.by_image),
            extracted=sum(len(self.missing[layer]) for layer in self.needed),
            present=self.present,
            seconds=seconds,
        )


def plan_extraction(
    store: Store,
    model: LoadedModel,
    boxes: Sequence[BoxRecord],
    layers: Sequence[str],
    kind: Descriptor,
    grid_size: int,
    mode: InputMode,
    batch_size: int,
    force: bool = False,
) -> ExtractionPlan:
    """What :func:`extract_boxes` (or the Ray backend) has to compute: the descriptors the
    feature store lacks (all of them with ``force``).

    Raises:
        KeyError: an unknown layer or a vanished image. ValueError: a bad descriptor kind,
        grid size or batch size.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    sets = feature_sets(store, model, layers, kind, grid_size, mode)
    images = store.get_images({b.image_id for b in boxes})
    keys = {b.id: stored_box(b, images[b.image_id]) for b in boxes}
    unique = list({b.id: b for b in boxes}.values())
    missing: dict[str, set[int]] = {}
    present = 0
    for layer, feature_set in sets.items():
        have = set() if force else store.features.present(feature_set, list(keys.values()))
        missing[layer] = {b.id for b in unique} - have
        present += len(have)
    needed = [layer for layer in sets if missing[layer]]
    by_image: dict[int, list[BoxRecord]] = {}
    for box in unique:
        if any(box.id in missing[layer] for layer in needed):
            by_image.setdefault(box.image_id, []).append(box)
    return ExtractionPlan(sets, images, keys, unique, missing, present, needed, by_image)


class _Writer:
    """Buffers each layer's new descriptors and writes them in segments of a few MB."""

    def __init__(self, features: FeatureStore, sets: dict[str, FeatureSet]) -> None:
        self.features, self.sets = features, sets
        self.keys: dict[str, list[StoredBox]] = {layer: [] for layer in sets}
        self.values: dict[str, list[np.ndarray]] = {layer: [] for layer in sets}
        self.written = 0

    def add(self, layer: str, key: StoredBox, value: torch.Tensor) -> None:
        self.keys[layer].append(key)
        self.values[layer].append(value.reshape(-1).numpy())
        if len(self.keys[layer]) * self.sets[layer].row_floats * 4 >= _SEGMENT_BYTES:
            self.flush(layer)

    def flush(self, layer: str | None = None) -> None:
        for name in [layer] if layer is not None else list(self.keys):
            if self.keys[name]:
                self.written += self.features.write(
                    self.sets[name], self.keys[name], np.stack(self.values[name])
                )
                self.keys[name], self.values[name] = [], []


def _decode_workers() -> int:
    """Threads that decode a batch: one a core (decoding runs between forward passes, with
    the cores to itself), at most 8."""
    return max(1, min(8, os.cpu_count() or 1))


def _batches(
    images: list[ImageRecord],
    model: LoadedModel,
    mode: InputMode,
    native_max_side: int,
    batch_size: int,
) -> list[list[ImageRecord]]:
    """Images in batches of one input size (``native``: grouped by size first)."""

    def size(image: ImageRecord) -> tuple[int, int]:
        return input_size(
            image.width, image.height, model.spec, mode, native_max_side, model.max_stride
        )

    groups: dict[tuple[int, int], list[ImageRecord]] = {}
    for image in images:
        groups.setdefault(size(image), []).append(image)
    return [
        members[start : start + batch_size]
        for members in groups.values()
        for start in range(0, len(members), batch_size)
    ]


def extract_boxes(
    store: Store,
    model: LoadedModel,
    boxes: Sequence[BoxRecord],
    layers: Sequence[str],
    kind: Descriptor = "gap",
    grid_size: int = 4,
    mode: InputMode = "resize",
    batch_size: int = 16,
    progress: Progress | None = None,
    cancelled: Callable[[], bool] | None = None,
    *,
    keep: bool = False,
    force: bool = False,
    decode_workers: int | None = None,
) -> tuple[ExtractionReport, dict[str, dict[int, torch.Tensor]]]:
    """Extract and store the descriptors of ``boxes`` that the feature store lacks.

    Args:
        store: the store (images, boxes, feature store).
        model: the loaded model.
        boxes: the boxes (of any images).
        layers: feature-map layer names.
        kind: ``gap``, ``grid`` or ``pixels``.
        grid_size: ``s`` for ``grid`` and ``pixels``.
        mode: input mode of the model.
        batch_size: images per forward pass.
        progress: called with a fraction in ``[0, 1]`` and a message after each batch.
        cancelled: polled before each batch; what is done so far is kept in the store.
        keep: also return the new descriptors (``{layer: {box id: tensor}}``).
        force: extract every box, even those already stored.
        decode_workers: threads that decode and preprocess a batch before its forward pass
            (default: one a core, at most 8).

    Returns:
        The report and (with ``keep``) the descriptors extracted now.

    Raises:
        KeyError: an unknown layer or a vanished image. ValueError: a bad descriptor kind,
        grid size or batch size. JobCancelled: ``cancelled()`` became true.
    """
    started = time.perf_counter()
    plan = plan_extraction(store, model, boxes, layers, kind, grid_size, mode, batch_size, force)
    sets, images, keys, missing = plan.sets, plan.images, plan.keys, plan.missing
    needed, by_image = plan.needed, plan.by_image
    out: dict[str, dict[int, torch.Tensor]] = {layer: {} for layer in sets}
    max_side = store.settings.native_max_side
    batches = _batches([images[i] for i in by_image], model, mode, max_side, batch_size)
    writer = _Writer(store.features, {layer: sets[layer] for layer in needed})

    def prepare(image: ImageRecord) -> torch.Tensor:
        # uncached: a dataset pass would push every image people look at out of the cache
        return prepare_input(model, store.load_decoded(image, remember=False), mode, max_side)

    def store_regions(batch: list[ImageRecord], maps: dict[str, torch.Tensor]) -> int:
        sizes = [(image.width, image.height) for image in batch]
        for layer in needed:
            chosen = [[b for b in by_image[i.id] if b.id in missing[layer]] for i in batch]
            regions = batch_region_descriptors(
                maps[layer],
                sizes,
                [[Box(b.x, b.y, b.w, b.h) for b in image_boxes] for image_boxes in chosen],
                kind,
                grid_size,
            )
            for image_boxes, image_regions in zip(chosen, regions, strict=True):
                for box, region in zip(image_boxes, image_regions, strict=True):
                    writer.add(layer, keys[box.id], region)
                    if keep:
                        out[layer][box.id] = region
        return len(batch)

    done = 0
    # Phases one after another, never side by side: decoding threads (or region and store
    # work in another thread) running during a forward pass preempt torch's intra-op
    # threads, and each op then waits at its barrier for the preempted one (on 2 cores the
    # overlapped pipeline was slower than taking turns, session 4's bench_extraction; in
    # turns, the forward inside the pipeline takes as long as the bare one). Decoding a batch
    # uses every core (PIL
    # releases the GIL while it inflates), the forward torch's threads, and a batch's
    # regions are one op a layer.
    with ThreadPoolExecutor(max_workers=decode_workers or _decode_workers()) as pool:
        for batch in batches:
            if cancelled is not None and cancelled():
                writer.flush()
                raise JobCancelled("cancelled")
            inputs = torch.stack(list(pool.map(prepare, batch)))
            with ENGINE_LOCK:
                maps = forward_maps(model, inputs, needed)
            done += store_regions(batch, maps)
            if progress is not None:
                progress(done / len(by_image), f"features of {done}/{len(by_image)} images")
    writer.flush()
    report = plan.report(time.perf_counter() - started)
    return report, out
