"""The Ray backend on a local Ray of two CPUs (``make bench-ray``; skipped without Ray).

* throughput of :func:`app.service.extraction.extract_boxes_ray` with 1 and 2 actors (one
  model copy and one CPU each) against the local pipeline on the same synthetic images,
  wall time including the actors' start;
* the driver's peak memory while reducing per-label statistics of 25k and 100k stored
  ``gap`` descriptors (1280 floats, 6 labels) shard by shard, in this process and as Ray
  tasks, against the descriptors' raw bytes (it must stay flat: no process holds them all).

Peak memory is ``VmHWM`` (reset through ``/proc/self/clear_refs`` before each step) minus
the RSS just before it, and the private (anonymous) RSS sampled every 5 ms (``VmHWM`` also
counts shared pages: the mapped segment files, Ray's object store); on a system without
that file the memory part is skipped.
"""

from __future__ import annotations

import io
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from app.config import Settings
from app.store import BoxRecord, Store
from app.store.features import FeatureSet

_CLASSES = 6
_WIDTH = 1280


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


class _AnonPeak:
    """The highest private (anonymous) RSS seen, sampled every 5 ms in a thread: unlike
    ``VmHWM`` it leaves out shared pages (Ray's object store mapped into the driver, the
    page cache of memory-mapped segment files)."""

    def __enter__(self) -> _AnonPeak:
        self.peak = _status("RssAnon")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, _status("RssAnon"))

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _status("RssAnon"))


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _fill(root: Path, images: int, boxes: int) -> Store:
    from benchmarks.synthetic import make_dataset

    dataset = make_dataset(root / "ds", images=images, boxes_per_image=boxes, seed=2, formats=())
    store = Store(Settings(data_dir=root / "data"))
    ids = {
        name: store.add_image((dataset.images_dir / name).read_bytes(), name)[0].id
        for name in dataset.file_names
    }
    for _, name, box in dataset.boxes:
        store.add_boxes(ids[name], [(box.x, box.y, box.w, box.h, box.label)])
    return store


def _throughput(root: Path) -> None:
    import torch

    from app.engine.models import get_model
    from app.service.extraction import extract_boxes
    from app.service.ray_extraction import RayOptions, extract_boxes_ray

    model = get_model("efficientnet_lite0")
    layers = ["blocks.5.0.conv_pw", "conv_head"]
    images = 128
    for name, run in [
        ("local (2 torch threads)", None),
        ("ray, 1 actor", 1),
        ("ray, 2 actors", 2),
    ]:
        store = _fill(root / name.replace(" ", "_"), images, 4)
        stamps: list[tuple[float, float]] = []

        def progress(fraction: float, _: str) -> None:
            stamps.append((time.perf_counter(), fraction))  # noqa: B023  (used in this loop)

        try:
            started = time.perf_counter()
            if run is None:
                torch.set_num_threads(2)
                extract_boxes(
                    store, model, store.boxes(), layers, "gap", batch_size=8, progress=progress
                )
            else:
                options = RayOptions(actors=run)
                extract_boxes_ray(
                    store,
                    model,
                    store.boxes(),
                    layers,
                    "gap",
                    batch_size=8,
                    progress=progress,
                    options=options,
                )
            seconds = time.perf_counter() - started
        finally:
            store.close()
        (first, done), (last, _) = stamps[0], stamps[-1]
        steady = (1 - done) * images / (last - first) if last > first else float("nan")
        print(
            f"  {name:24s} {images / seconds:5.1f} images/s overall ({seconds:.1f} s for "
            f"{images}, first shard after {first - started:.1f} s), {steady:5.1f} images/s "
            "after the first shard"
        )


def _stats_store(root: Path, boxes: int) -> tuple[Store, FeatureSet, list[BoxRecord]]:
    """A store of ``boxes`` boxes over tiny images, each with a random stored descriptor."""
    from PIL import Image

    from app.service.extraction import stored_box

    store = Store(Settings(data_dir=root, max_boxes_per_image=500))
    rng = np.random.default_rng(0)
    chosen = store.features.feature_set(
        model="bench",
        weights_sha256="0" * 64,
        layer="conv_head",
        descriptor="gap",
        grid_size=0,
        mode="resize",
        rows_per_box=1,
        width=_WIDTH,
    )
    per_image = 500
    for start in range(0, boxes, per_image):
        buffer = io.BytesIO()
        Image.new("RGB", (64, 64), (start % 251, start // 251 % 251, 7)).save(buffer, "PNG")
        image = store.add_image(buffer.getvalue(), f"{start}.png")[0]
        records = store.add_boxes(
            image.id,
            [(k % 50, k // 50 % 50, 10, 10, f"c{k % _CLASSES}") for k in range(per_image)],
        )
        keys = [stored_box(b, image) for b in records]
        values = rng.normal(size=(len(keys), _WIDTH)).astype(np.float32) + 3
        store.features.write(chosen, keys, values)
    return store, chosen, store.boxes()


def _memory(stores: dict[int, tuple[Store, FeatureSet, list[BoxRecord]]], ray: bool) -> None:
    from app.service.statistics import label_statistics

    for boxes, (store, chosen, records) in stores.items():
        _reset_peak()
        before, anon = _status("VmRSS"), _status("RssAnon")
        started = time.perf_counter()
        with _AnonPeak() as sampled:
            stats = label_statistics(store, chosen, records, ray_address="local" if ray else None)
        seconds = time.perf_counter() - started
        peak = _status("VmHWM") - before
        private = sampled.peak - anon
        raw = boxes * _WIDTH * 4
        where = "ray tasks" if ray else "this process"
        print(
            f"  {boxes:7d} boxes ({where:12s}): driver peak RSS +{peak / 2**20:4.0f} MiB, "
            f"private +{private / 2**20:4.0f} MiB; descriptors {raw / 2**20:4.0f} MiB "
            f"(private peak {private / raw:.2f}× them), {stats.shards} shards, {seconds:.1f} s"
        )


def main() -> None:
    """Print the throughput and memory figures."""
    try:
        import ray
    except ImportError:
        print("  skipped: Ray is not installed (pip install -e '.[ray]')")
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        measured = _reset_peak()
        stores = (
            {n: _stats_store(root / f"stats{n}", n) for n in (25_000, 100_000)} if measured else {}
        )
        try:
            if measured:
                print(f"per-label statistics, gap {_WIDTH} floats, {_CLASSES} labels:")
                _memory(stores, ray=False)
            else:
                print("  (no /proc/self/clear_refs: driver memory not measured)")
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
            try:
                _memory(stores, ray=True)
                print("extraction throughput, 128 synthetic 320×240 images, 4 boxes each:")
                _throughput(root)
            finally:
                ray.shutdown()
        finally:
            for store, _, _ in stores.values():
                store.close()


if __name__ == "__main__":
    main()
