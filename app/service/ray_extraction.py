"""Extraction on a Ray cluster: the same descriptors in the same feature store as
:func:`app.service.extraction.extract_boxes`, computed by a pool of Ray actors.

The pipeline is a Ray Data dataset:

1. the driver plans as the local pipeline does (only boxes whose descriptor the store lacks)
   and lists their images, one row per image (path of its bytes, size, boxes), in shards of
   ``batch_size`` images;
2. ``map_batches(_decode)`` reads and decodes each image and makes the model input;
3. ``map_batches(DescriptorActor)`` on an actor pool (:class:`ray.data.ActorPoolStrategy`),
   each actor holding the model once, on a GPU when it was given one, forwards the shard and
   cuts every box's descriptor of every layer;
4. the driver receives each shard's descriptors whole and writes them through
   :meth:`app.store.features.FeatureStore.write` (one segment file + one SQL transaction per
   write): same store, same keys as the local pipeline.

An actor that dies is restarted and its shard is run again (Ray Data's actor pool sets
``max_restarts=-1`` and ``max_task_retries=-1``); a shard's output reaches the driver only
when the shard is done, so the store never holds part of a shard.

What runs where: the driver (the CLI or the API server) needs the store's database and
feature folder; workers read the image files at the store's paths (``<data_dir>/images``,
so the data dir must be on storage every node mounts at the same path) and need FeatureGap
installed. The model travels to the actors through Ray's object store.

Ray is optional (``pip install -e '.[ray]'``); it is imported only when this runs.
"""

from __future__ import annotations

import json
import os
import threading
import time
import warnings
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from app.boxes import Box
from app.engine.features import forward_maps
from app.engine.models import LoadedModel, ModelSpec
from app.engine.preprocess import InputMode, input_size, to_input
from app.engine.regions import Descriptor, region_descriptors
from app.errors import FeatureGapError
from app.images import decode_image
from app.jobs import JobCancelled
from app.service.extraction import ExtractionPlan, ExtractionReport, plan_extraction
from app.store import BoxRecord, Store
from app.store.features import FeatureSet, StoredBox

if TYPE_CHECKING:
    from types import ModuleType

__all__ = [
    "DescriptorActor",
    "RayNotInstalled",
    "RayOptions",
    "connect",
    "extract_boxes_ray",
    "import_ray",
]

Progress = Callable[[float, str], None]
Batch = dict[str, np.ndarray]
_SEGMENT_BYTES = 32 * 1024 * 1024  # descriptor bytes the driver buffers per layer
_CONNECT_LOCK = threading.Lock()
_INSTALL_HINT = "Ray is not installed; install the extra with: pip install -e '.[ray]'"


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide to run.

    Attributes:
        address: the cluster (``auto``, ``ray://head:10001``, ``head:6379``); ``None`` or
            ``"local"``: Ray's own choice (``RAY_ADDRESS``, else a Ray started in this
            process). Ignored when Ray is already initialised in this process.
        actors: actors in the pool (each holds one copy of the model).
        cpus_per_actor: CPUs each actor reserves (and torch threads it uses).
        gpus_per_actor: GPUs each actor reserves (0: CPU only).
    """

    address: str | None = None
    actors: int = 2
    cpus_per_actor: float = 1.0
    gpus_per_actor: float = 0.0

    def __post_init__(self) -> None:
        if self.actors < 1:
            raise ValueError(f"actors must be at least 1, got {self.actors}")
        if self.cpus_per_actor <= 0 or self.gpus_per_actor < 0:
            raise ValueError("cpus_per_actor must be positive and gpus_per_actor not negative")


class RayNotInstalled(FeatureGapError, RuntimeError):
    """Ray was asked for (``--ray``, ``FEATUREGAP_RAY_ADDRESS``) but is not installed."""


def import_ray() -> ModuleType:
    """The ``ray`` module, or a clear error naming the extra to install.

    Raises:
        RayNotInstalled: Ray (with Ray Data) is not installed.
    """
    try:
        import ray
        import ray.data  # noqa: F401  (the extra's Ray Data part)
    except ImportError as error:
        raise RayNotInstalled(_INSTALL_HINT) from error
    return ray


def connect(address: str | None) -> ModuleType:
    """Ray, initialised in this process (joining ``address``) unless it already is."""
    ray = import_ray()
    with _CONNECT_LOCK:  # two jobs starting at once must not both call ray.init
        if not ray.is_initialized():
            ray.init(
                address=None if address in (None, "", "local") else address,
                log_to_driver=False,
                include_dashboard=False,
            )
    with warnings.catch_warnings():
        # Ray 2.60's DataContext warns about its own deprecated defaults when first built.
        warnings.simplefilter("ignore", DeprecationWarning)
        context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the driver reports progress itself
    return ray


def _objects(items: Sequence[Any]) -> np.ndarray:
    """A 1-D object array (``np.array`` would stack arrays of one shape into one)."""
    out = np.empty(len(items), dtype=object)
    for index, item in enumerate(items):
        out[index] = item
    return out


def _decode(
    batch: Batch,
    *,
    spec: ModelSpec,
    mode: InputMode,
    native_max_side: int,
    max_stride: int,
    max_image_pixels: int,
) -> Batch:
    """Read and decode a shard's images and make their model inputs (``3×h×w`` float32)."""
    inputs = []
    for path, width, height in zip(batch["path"], batch["width"], batch["height"], strict=True):
        with open(str(path), "rb") as handle:
            data = handle.read()
        decoded = decode_image(data, max_pixels=max(max_image_pixels, int(width) * int(height)))
        inputs.append(to_input(decoded.pixels, spec, mode, native_max_side, max_stride).numpy())
    return {**batch, "input": _objects(inputs)}


class DescriptorActor:
    """A pool member: holds the model once and turns a shard of images into the
    descriptors of their boxes (``box_id`` plus one ``n × floats`` column per layer)."""

    def __init__(
        self, model: LoadedModel, layers: Sequence[str], kind: Descriptor, grid_size: int
    ) -> None:
        threads = int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
        if threads > 0:  # Ray sets it from the actor's CPUs; torch must not oversubscribe
            torch.set_num_threads(threads)
        self.device = torch.device("cuda" if _has_gpu() else "cpu")
        self.model = replace(model, module=model.module.to(self.device))
        self.layers, self.kind, self.grid_size = list(layers), kind, grid_size

    def __call__(self, batch: Batch) -> Batch:
        inputs = [torch.from_numpy(np.asarray(x, dtype=np.float32)) for x in batch["input"]]
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for row, tensor in enumerate(inputs):
            by_shape.setdefault(tuple(tensor.shape), []).append(row)
        box_ids: list[int] = []
        values: list[list[np.ndarray]] = [[] for _ in self.layers]
        for rows in by_shape.values():
            stacked = torch.stack([inputs[r] for r in rows]).to(self.device)
            maps = forward_maps(self.model, stacked, self.layers)
            for k, row in enumerate(rows):
                boxes = json.loads(str(batch["boxes"][row]))
                size = (int(batch["width"][row]), int(batch["height"][row]))
                box_ids.extend(int(b[0]) for b in boxes)
                for index, layer in enumerate(self.layers):
                    regions = region_descriptors(
                        maps[layer][k],
                        size,
                        [Box(*b[1:]) for b in boxes],
                        self.kind,
                        self.grid_size,
                    )
                    values[index].extend(r.reshape(-1).cpu().numpy() for r in regions)
        out: Batch = {"box_id": np.asarray(box_ids, dtype=np.int64)}
        for index, column in enumerate(values):
            out[f"layer{index}"] = np.stack(column).astype(np.float32, copy=False)
        return out


def _has_gpu() -> bool:
    if not torch.cuda.is_available():
        return False
    import ray

    return bool(ray.get_gpu_ids())


class _Writer:
    """Buffers each layer's descriptors of whole shards and writes them in segments."""

    def __init__(self, store: Store, sets: dict[str, FeatureSet]) -> None:
        self.store, self.sets = store, sets
        self.keys: dict[str, list[StoredBox]] = {layer: [] for layer in sets}
        self.values: dict[str, list[np.ndarray]] = {layer: [] for layer in sets}
        self.written = 0

    def add(self, layer: str, keys: list[StoredBox], values: np.ndarray) -> None:
        self.keys[layer].extend(keys)
        self.values[layer].append(values)
        if len(self.keys[layer]) * self.sets[layer].row_floats * 4 >= _SEGMENT_BYTES:
            self.flush(layer)

    def flush(self, layer: str | None = None) -> None:
        for name in [layer] if layer is not None else list(self.keys):
            if self.keys[name]:
                self.written += self.store.features.write(
                    self.sets[name], self.keys[name], np.concatenate(self.values[name])
                )
                self.keys[name], self.values[name] = [], []


def extract_boxes_ray(
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
    options: RayOptions | None = None,
    force: bool = False,
    actor: type[DescriptorActor] = DescriptorActor,
) -> ExtractionReport:
    """Extract and store the descriptors of ``boxes`` that the feature store lacks, on Ray.

    Arguments as :func:`app.service.extraction.extract_boxes`, plus:

    Args:
        options: the cluster address and the actor pool's size and resources.
        force: extract every box, even those already stored.
        actor: the pool's actor class (a subclass may wrap :class:`DescriptorActor`).

    Returns:
        The report (``images`` counts the images sent to the actors).

    Raises:
        RuntimeError: Ray is not installed. KeyError: an unknown layer or a vanished
        image. ValueError: a bad descriptor kind, grid size or batch size. JobCancelled:
        ``cancelled()`` became true (whole shards received so far are kept).
    """
    started = time.perf_counter()
    options = options or RayOptions()
    plan = plan_extraction(store, model, boxes, layers, kind, grid_size, mode, batch_size, force)
    total = sum(len(v) for v in plan.by_image.values())
    if plan.by_image:
        writer = _Writer(store, {layer: plan.sets[layer] for layer in plan.needed})
        done = 0
        shards = _run(store, model, plan, kind, grid_size, mode, batch_size, options, actor)
        try:
            for batch in shards:
                ids = batch["box_id"].tolist()
                for index, layer in enumerate(plan.needed):
                    rows = [k for k, box_id in enumerate(ids) if box_id in plan.missing[layer]]
                    if rows:
                        values = batch[f"layer{index}"][rows]
                        writer.add(layer, [plan.keys[ids[k]] for k in rows], values)
                done += len(ids)
                if progress is not None:
                    progress(done / total, f"descriptors of {done}/{total} boxes")
                if cancelled is not None and cancelled():
                    writer.flush()
                    raise JobCancelled("cancelled")
        finally:
            shards.close()  # stops the pipeline when a cancel or an error ends the loop
        writer.flush()
    return plan.report(time.perf_counter() - started)


def _run(
    store: Store,
    model: LoadedModel,
    plan: ExtractionPlan,
    kind: Descriptor,
    grid_size: int,
    mode: InputMode,
    batch_size: int,
    options: RayOptions,
    actor: type[DescriptorActor],
) -> Generator[Batch, None, None]:
    """Each shard's output (the plan's missing boxes at its needed layers), as the cluster
    finishes it."""
    ray = connect(options.address)
    max_side = store.settings.native_max_side
    images, by_image = plan.images, plan.by_image

    def order(image_id: int) -> tuple[int, int]:  # shards of one input size where possible
        image = images[image_id]
        return input_size(image.width, image.height, model.spec, mode, max_side, model.max_stride)

    rows = [
        {
            "path": str(store.image_path(images[image_id])),
            "width": images[image_id].width,
            "height": images[image_id].height,
            "boxes": json.dumps([[b.id, b.x, b.y, b.w, b.h] for b in by_image[image_id]]),
        }
        for image_id in sorted(by_image, key=order)
    ]
    shards = -(-len(rows) // batch_size)
    dataset = (
        ray.data.from_items(rows, override_num_blocks=shards)
        .map_batches(
            _decode,
            batch_size=batch_size,
            fn_kwargs={
                "spec": model.spec,
                "mode": mode,
                "native_max_side": max_side,
                "max_stride": model.max_stride,
                "max_image_pixels": store.settings.max_image_pixels,
            },
        )
        .map_batches(
            actor,
            batch_size=batch_size,
            compute=ray.data.ActorPoolStrategy(size=options.actors),
            fn_constructor_kwargs={
                "model": model,
                "layers": plan.needed,
                "kind": kind,
                "grid_size": grid_size,
            },
            num_cpus=options.cpus_per_actor,
            num_gpus=options.gpus_per_actor or None,
        )
    )
    batches = dataset.iter_batches(batch_size=None, batch_format="numpy")
    try:
        yield from batches
    finally:
        close = getattr(batches, "close", None)
        if close is not None:
            close()
