"""Dataset import: 2,000 synthetic 320×240 images with 10,000 boxes from a COCO folder.

Goal: under 60 s for the first import (every image read, hashed, decoded and stored, every
box checked and written); a re-import adds nothing and is printed beside it.
"""

from __future__ import annotations

import resource
import tempfile
import time
from pathlib import Path

from app.config import Settings
from app.service.datasets import import_coco_dataset
from app.store import Store
from benchmarks.synthetic import make_dataset

IMAGES, BOXES_PER_IMAGE = 2_000, 5


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="featuregap-bench-import-") as folder:
        root = Path(folder)
        start = time.perf_counter()
        dataset = make_dataset(root / "ds", IMAGES, BOXES_PER_IMAGE, seed=0, formats=("coco",))
        generated = time.perf_counter() - start
        assert dataset.coco is not None
        store = Store(Settings(data_dir=root / "data"))
        before_mib = _peak_mib()
        try:
            start = time.perf_counter()
            first = import_coco_dataset(store, dataset.coco, dataset.images_dir)
            imported = time.perf_counter() - start
            start = time.perf_counter()
            again = import_coco_dataset(store, dataset.coco, dataset.images_dir)
            reimported = time.perf_counter() - start
        finally:
            store.close()
    assert (first.images_added, first.boxes_added) == (IMAGES, IMAGES * BOXES_PER_IMAGE)
    assert (again.images_added, again.boxes_added) == (0, 0)
    print(
        f"import COCO {IMAGES} images / {IMAGES * BOXES_PER_IMAGE} boxes (320x240): "
        f"{imported:.1f}s (goal < 60 s; {IMAGES / imported:.0f} images/s); re-import "
        f"adding nothing {reimported:.1f}s ({reimported / imported:.2f}x); generating the "
        f"dataset {generated:.1f}s; peak RSS {_peak_mib():.0f} MiB, {before_mib:.0f} MiB "
        "of it before the import (torch and the libraries)"
    )


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
