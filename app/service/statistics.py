"""Per-label statistics of stored descriptors, reduced from per-shard sufficient statistics.

The boxes are cut into shards; each shard's descriptors are read from the feature store and
turned into per-label :class:`app.engine.moments.Moments` (float64), and the driver adds the
shards' moments as they come. No process holds more than one shard of descriptors: the
driver holds one running ``d×d`` sum per label. Shards run one after the other here, or as
Ray tasks (``ray_address``) that read the segment files themselves (so the feature folder,
``<data_dir>/features``, must be on storage every node mounts at the same path).

The means and shrunk covariances answer ``euclidean``, ``std_euclidean`` and
``mahalanobis`` between labels exactly (:func:`app.engine.moments.distance_matrix`). MMD
needs kernel sums over pairs, not moments: on sets too large for one request it is computed
blocked on the driver from the store, not here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from app.engine.moments import Moments, add_into, label_moments
from app.service.extraction import stored_box
from app.store import BoxRecord, Store
from app.store.features import FeatureSet

__all__ = ["LabelStatistics", "label_statistics", "shard_moments"]

Progress = Callable[[float, str], None]
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
    shift = first[0].astype(np.float64)
    parts = (
        _local(shards, shape, shift)
        if ray_address is None
        else _on_ray(shards, shape, shift, ray_address)
    )
    total: dict[str, Moments] = {}
    for done, part in enumerate(parts, start=1):
        add_into(total, part)
        if progress is not None:
            progress(done / len(shards), f"statistics of {done}/{len(shards)} shards")
    order = list(dict.fromkeys(b.label for b in unique))
    return LabelStatistics(
        {label: total[label] for label in order},
        boxes=len(unique),
        rows=len(unique) * feature_set.rows_per_box,
        shards=len(shards),
    )


def _local(
    shards: list[_Shard], shape: tuple[int, int], shift: np.ndarray
) -> Iterator[dict[str, Moments]]:
    for shard in shards:
        yield shard_moments(shard, *shape, shift)


def _on_ray(
    shards: list[_Shard], shape: tuple[int, int], shift: np.ndarray, address: str | None
) -> Iterator[dict[str, Moments]]:
    """Shards as Ray tasks, a few in flight per CPU, results in the order they finish."""
    from app.service.ray_extraction import connect

    ray = connect(address)
    task = ray.remote(shard_moments)
    shift_ref = ray.put(shift)
    in_flight = max(2, 2 * int(ray.cluster_resources().get("CPU", 1)))
    waiting = list(reversed(shards))
    running = [task.remote(waiting.pop(), *shape, shift_ref) for _ in shards[:in_flight]]
    while running:
        ready, running = ray.wait(running, num_returns=1)
        if waiting:
            running.append(task.remote(waiting.pop(), *shape, shift_ref))
        yield ray.get(ready[0])
