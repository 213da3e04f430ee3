"""Per-label statistics of stored descriptors, reduced from per-shard sufficient statistics.

The boxes are cut into shards; each shard's descriptors are read from the feature store and
turned into per-label :class:`app.engine.moments.Moments` (float64), and the driver adds the
shards' moments as they come. No process holds more than one shard of descriptors: the
driver holds one running ``d×d`` sum per label. Shards run one after the other here, or as
Ray tasks (``ray_address``) that read the segment files themselves (so the feature folder,
``<data_dir>/features``, must be on storage every node mounts at the same path).

The means and shrunk covariances answer ``euclidean``, ``std_euclidean`` and
``mahalanobis`` between labels exactly (:func:`app.engine.moments.distance_matrix`). MMD
needs kernel sums over pairs, not moments: :func:`label_mmd` estimates it from per-shard
sums of random Fourier features (linear in the rows; an approximation whose error shrinks
as ``1/√features``); the exact MMD of large sets is computed blocked on the driver from
the store by the analysis routes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from app.engine.moments import Moments, add_into, iter_label_moments, label_moments
from app.engine.random_features import (
    FeatureSums,
    RandomFeatures,
    add_sums,
    label_sums,
    mmd_from_features,
    multi_kernel,
)
from app.service.extraction import stored_box
from app.store import BoxRecord, Store
from app.store.features import FeatureSet

__all__ = ["LabelStatistics", "label_mmd", "label_statistics", "shard_moments", "shard_sums"]

Progress = Callable[[float, str], None]
_T = TypeVar("_T")
# One shard: (segment file, row in it, label) per box.
_Shard = list[tuple[str, int, str]]


@dataclass(frozen=True)
class LabelStatistics:
    """Each label's moments (in first-seen order) and how the reduction ran."""

    moments: dict[str, Moments]
    boxes: int
    rows: int
    shards: int


def _read_shard(shard: _Shard, rows_per_box: int, width: int) -> tuple[np.ndarray, list[str]]:
    """The shard's descriptors as ``rows × width`` and one label per row."""
    by_file: dict[str, list[int]] = {}
    for index, (name, _, _) in enumerate(shard):
        by_file.setdefault(name, []).append(index)
    out = np.empty((len(shard), rows_per_box * width), dtype=np.float32)
    for name, indices in by_file.items():
        try:
            array = np.load(name, mmap_mode="r")
        except FileNotFoundError as error:
            raise FileNotFoundError(
                f"descriptor segment {name} vanished (compacted meanwhile, or not on this "
                "node's storage); run the statistics again"
            ) from error
        positions = np.asarray([shard[i][1] for i in indices], dtype=np.int64)
        order = np.argsort(positions, kind="stable")  # read each file front to back
        out[np.asarray(indices)[order]] = array[positions[order]]
    labels = [label for _, _, label in shard for _ in range(rows_per_box)]
    return out.reshape(len(shard) * rows_per_box, width), labels


def shard_moments(
    shard: _Shard, rows_per_box: int, width: int, shift: np.ndarray
) -> dict[str, Moments]:
    """One shard's per-label moments (what a worker computes)."""
    rows, labels = _read_shard(shard, rows_per_box, width)
    return label_moments(rows, labels, shift)


def shard_sums(
    shard: _Shard, rows_per_box: int, width: int, shift: np.ndarray, features: RandomFeatures
) -> dict[str, FeatureSums]:
    """One shard's per-label sums of random Fourier features (what a worker computes)."""
    rows, labels = _read_shard(shard, rows_per_box, width)
    return label_sums(features, rows, labels, shift)


@dataclass(frozen=True)
class _Plan:
    shards: list[_Shard]
    shape: tuple[int, int]
    shift: np.ndarray
    labels: list[str]


def _plan(
    store: Store, feature_set: FeatureSet, boxes: Sequence[BoxRecord], shard_boxes: int
) -> _Plan:
    if shard_boxes < 1:
        raise ValueError(f"shard_boxes must be at least 1, got {shard_boxes}")
    unique = list({b.id: b for b in boxes}.values())
    if not unique:
        raise ValueError("no boxes to reduce; choose labels or ids that have boxes")
    images = store.get_images({b.image_id for b in unique})
    keys = [stored_box(b, images[b.image_id]) for b in unique]
    where = store.features.locate(feature_set, keys)
    lacking = [b.id for b in unique if b.id not in where]
    if lacking:
        raise ValueError(
            f"{len(lacking)} boxes (e.g. {lacking[:5]}) have no stored {feature_set.descriptor} "
            f"descriptor at {feature_set.layer}; run featuregap extract for them first"
        )
    items = [(str(where[b.id][0]), where[b.id][1], b.label) for b in unique]
    shards = [items[start : start + shard_boxes] for start in range(0, len(items), shard_boxes)]
    shape = (feature_set.rows_per_box, feature_set.width)
    first, _ = _read_shard(shards[0][:1], *shape)
    labels = list(dict.fromkeys(b.label for b in unique))
    return _Plan(shards, shape, first[0].astype(np.float64), labels)


def label_statistics(
    store: Store,
    feature_set: FeatureSet,
    boxes: Sequence[BoxRecord],
    *,
    shard_boxes: int = 4096,
    ray_address: str | None = None,
    progress: Progress | None = None,
) -> LabelStatistics:
    """Per-label moments of the stored descriptors of ``boxes`` (each row of a ``pixels``
    descriptor is one sample of its box's label).

    Args:
        store: the store.
        feature_set: which descriptors (see :func:`app.service.extraction.feature_sets`).
        boxes: the boxes; every one must have its descriptor stored.
        shard_boxes: boxes per shard.
        ray_address: run the shards as Ray tasks on this cluster (``"local"``: Ray's own
            choice); ``None``: one after the other in this process.
        progress: called with a fraction and a message after each shard.

    Returns:
        The moments (about the first stored row) and the counts.

    Raises:
        ValueError: no boxes, a box without a stored descriptor, too wide a descriptor, or
        a bad shard size. RuntimeError: Ray asked for but not installed.
    """
    plan = _plan(store, feature_set, boxes, shard_boxes)
    moments = _moments(plan, ray_address, progress, 1.0)
    boxes_count = sum(len(shard) for shard in plan.shards)
    return LabelStatistics(
        moments,
        boxes=boxes_count,
        rows=boxes_count * feature_set.rows_per_box,
        shards=len(plan.shards),
    )


def _moments(
    plan: _Plan, address: str | None, progress: Progress | None, share: float
) -> dict[str, Moments]:
    """Per-label moments added shard by shard (progress runs up to ``share``)."""
    total: dict[str, Moments] = {}
    if address is None:  # label by label: one label's d×d beside the running sums
        parts: Iterator[Iterable[tuple[str, Moments]]] = (
            iter_label_moments(*_read_shard(shard, *plan.shape), plan.shift)
            for shard in plan.shards
        )
    else:
        parts = (part.items() for part in _map_shards(shard_moments, plan, (plan.shift,), address))
    for done, part in enumerate(parts, start=1):
        for label, moments in part:
            add_into(total, {label: moments})
        if progress is not None:
            message = f"moments of {done}/{len(plan.shards)} shards"
            progress(share * done / len(plan.shards), message)
    return {label: total[label] for label in plan.labels}


def label_mmd(
    store: Store,
    feature_set: FeatureSet,
    boxes: Sequence[BoxRecord],
    *,
    features: int = 4096,
    estimator: str = "biased",
    kernel_mul: float = 2.0,
    kernel_num: int = 5,
    seed: int = 0,
    shard_boxes: int = 4096,
    ray_address: str | None = None,
    progress: Progress | None = None,
) -> tuple[list[str], np.ndarray, tuple[float, ...]]:
    """MMD² between every pair of labels, estimated from per-shard random-feature sums.

    Two passes over the shards: moments give the seed/DAN multi-kernel bandwidths of all
    chosen rows pooled (for two labels: ``mmd(kernel="multi")``'s kernel), then each shard
    adds ``Σ φ`` per label (:mod:`app.engine.random_features`; the estimate's error is
    ``O(1/√features)`` of the kernel's scale).

    Returns:
        The labels (first-seen order), the ``labels × labels`` matrix (zero diagonal) and
        the kernel's scales ``s`` (``exp(−‖a−b‖²/s)``, averaged).

    Raises:
        ValueError: as :func:`label_statistics`, or a bad estimator or kernel family.
    """
    if estimator not in ("biased", "unbiased"):
        raise ValueError(f"unknown estimator {estimator!r}; use 'biased' or 'unbiased'")
    plan = _plan(store, feature_set, boxes, shard_boxes)
    moments = _moments(plan, ray_address, progress, 0.5)
    scales, weight = multi_kernel(moments.values(), kernel_mul, kernel_num)
    random = RandomFeatures(scales, weight, features, plan.shape[1], seed)
    sums: dict[str, FeatureSums] = {}
    parts = _map_shards(shard_sums, plan, (plan.shift, random), ray_address)
    for done, part in enumerate(parts, start=1):
        add_sums(sums, part)
        if progress is not None:
            message = f"random-feature sums of {done}/{len(plan.shards)} shards"
            progress(0.5 + 0.5 * done / len(plan.shards), message)
    names = plan.labels
    out = np.zeros((len(names), len(names)))
    for i, a in enumerate(names):
        for j in range(i + 1, len(names)):
            value = mmd_from_features(sums[a], sums[names[j]], random.at_zero, estimator)
            out[i, j] = out[j, i] = value
    return names, out, scales


def _map_shards(
    fn: Callable[..., _T], plan: _Plan, extra: tuple[object, ...], address: str | None
) -> Iterator[_T]:
    """``fn(shard, rows_per_box, width, *extra)`` of every shard: one after the other here,
    or as Ray tasks (a few in flight per CPU, results in the order they finish)."""
    if address is None:
        for shard in plan.shards:
            yield fn(shard, *plan.shape, *extra)
        return
    from app.service.ray_extraction import connect

    ray = connect(address)
    task = ray.remote(fn)
    refs = [ray.put(value) for value in extra]  # shipped once, not with every task
    in_flight = max(2, 2 * int(ray.cluster_resources().get("CPU", 1)))
    waiting = list(reversed(plan.shards))
    running = [task.remote(waiting.pop(), *plan.shape, *refs) for _ in plan.shards[:in_flight]]
    while running:
        ready, running = ray.wait(running, num_returns=1)
        if waiting:
            running.append(task.remote(waiting.pop(), *plan.shape, *refs))
        yield ray.get(ready[0])
