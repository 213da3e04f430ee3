"""COCO import into the store: one transaction per batch, and a retry after a failure, a
cancel or a kill -9 ends with exactly the file's boxes once."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from app.config import Settings
from app.formats.coco import CocoDocument, parse_coco
from app.jobs import JobCancelled
from app.service import imports
from app.store import Store

N_IMAGES = 7
BOXES_PER_IMAGE = 3


def _png(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (23, 37, 3), np.uint8)).save(
        buffer, format="PNG"
    )
    return buffer.getvalue()


def _coco() -> dict[str, Any]:
    return {
        "images": [
            {"id": 100 + i, "file_name": f"img/{i}.png", "width": 37, "height": 23}
            for i in range(N_IMAGES)
        ],
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
        # A repeated annotation (k = 0 and 1 share geometry) must arrive twice, once each.
        "annotations": [
            {
                "id": k,
                "image_id": 100 + k // BOXES_PER_IMAGE,
                "category_id": 1 + (k % 3 == 2),
                "bbox": [max(k % 3, 1), 1.5, 4, 5],
            }
            for k in range(N_IMAGES * BOXES_PER_IMAGE)
        ],
    }


def _expected(document: dict[str, Any], store: Store) -> list[tuple[Any, ...]]:
    ids = {
        f"{i}.png": image.id
        for i, image in enumerate(sorted(store.images(), key=lambda r: r.filename))
    }
    labels = {c["id"]: c["name"] for c in document["categories"]}
    return sorted(
        (ids[f"{a['image_id'] - 100}.png"], *map(float, a["bbox"]), labels[a["category_id"]])
        for a in document["annotations"]
    )


def _held(store: Store) -> list[tuple[Any, ...]]:
    return sorted((b.image_id, b.x, b.y, b.w, b.h, b.label) for b in store.boxes())


def _fill(settings: Settings) -> Store:
    store = Store(settings)
    for i in range(N_IMAGES):
        store.add_image(_png(i), f"{i}.png")
    return store


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Store:
    monkeypatch.setattr(imports, "BATCH_BOXES", 2 * BOXES_PER_IMAGE)  # 2 images a batch
    return _fill(Settings(data_dir=tmp_path / "data"))


def _document() -> CocoDocument:
    return parse_coco(_coco())


def test_import_twice_adds_the_file_once(store: Store) -> None:
    first = imports.import_coco(store, _document())
    assert (first.boxes_added, first.boxes_present, first.images_matched) == (21, 0, 7)
    assert store.labels() == {"cat": 14, "dog": 7}
    again = imports.import_coco(store, _document())
    assert (again.boxes_added, again.boxes_present, again.skipped) == (0, 21, [])
    assert _held(store) == _expected(_coco(), store)
    # The file's annotation ids are kept and come back in the export.
    assert sorted(b.source_id for b in store.boxes()) == list(range(21))
    exported = imports.export_coco(store)
    assert sorted(a["id"] for a in exported["annotations"]) == list(range(21))  # type: ignore[index]


def test_a_failure_inside_a_batch_rolls_that_batch_back_and_a_retry_completes(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    real = Store._missing_rows

    def failing(self: Store, session: Any, image_id: int, *rest: Any) -> Any:
        calls.append(image_id)
        if len(calls) == 4:  # the second image of the second batch
            raise OSError("disk I/O error")
        return real(self, session, image_id, *rest)

    monkeypatch.setattr(Store, "_missing_rows", failing)
    with pytest.raises(OSError):
        imports.import_coco(store, _document())
    assert len(store.boxes()) == 2 * BOXES_PER_IMAGE  # batch 1 only: batch 2 rolled back
    monkeypatch.setattr(Store, "_missing_rows", real)
    retry = imports.import_coco(store, _document())
    assert (retry.boxes_added, retry.boxes_present) == (15, 6)
    assert _held(store) == _expected(_coco(), store)


def test_a_cancel_keeps_finished_batches_and_a_retry_adds_the_rest(store: Store) -> None:
    progress: list[float] = []
    with pytest.raises(JobCancelled):
        imports.import_coco(
            store, _document(), lambda f, _m: progress.append(f), lambda: len(progress) >= 2
        )
    assert progress == [0.25, 0.5] and len(store.boxes()) == 4 * BOXES_PER_IMAGE
    retry = imports.import_coco(store, _document())
    assert (retry.boxes_added, retry.boxes_present) == (9, 12)
    assert _held(store) == _expected(_coco(), store)


_CHILD = """
import json, sys, time
from app.config import Settings
from app.formats.coco import parse_coco
from app.service import imports
from app.store import Store
imports.BATCH_BOXES = 3
store = Store(Settings(data_dir=sys.argv[1]))
marker = sys.argv[3]
def progress(fraction, message):
    if fraction >= 3 / 7:
        open(marker, "w").close()
        time.sleep(600)  # killed here, with a write transaction about to follow
imports.import_coco(store, parse_coco(json.load(open(sys.argv[2]))), progress)
"""


def test_kill_9_mid_import_then_retry_holds_the_file_once(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    _fill(settings).close()
    coco = tmp_path / "coco.json"
    coco.write_text(json.dumps(_coco()))
    marker = tmp_path / "marker"
    root = Path(__file__).resolve().parents[2]
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(settings.data_dir), str(coco), str(marker)],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert child.poll() is None, "the importing process ended early"
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    store = Store(settings)
    assert len(store.boxes()) == 3 * BOXES_PER_IMAGE  # three committed batches survive
    retry = imports.import_coco(store, _document())
    assert (retry.boxes_added, retry.boxes_present) == (12, 9)
    assert _held(store) == _expected(_coco(), store)


def test_export_keeps_imported_ids_and_gives_the_other_boxes_unused_ones(store: Store) -> None:
    image = store.images()[0]
    own = store.add_box(image.id, 0, 0, 3, 3, "own")  # store id 1
    document = _coco()
    document["annotations"] = document["annotations"][:3]
    for annotation, kept in zip(document["annotations"], (1, 7, "x-9"), strict=True):
        annotation["id"] = kept  # 1 is the own box's store id; a string id is not kept
    imports.import_coco(store, parse_coco(document))
    exported = imports.export_coco(store)
    labels = {c["id"]: c["name"] for c in exported["categories"]}  # type: ignore[attr-defined]
    ids = sorted((labels[a["category_id"]], a["id"]) for a in exported["annotations"])  # type: ignore[attr-defined]
    # The imported boxes keep 1 and 7; the one with a string id keeps its store id (4); the
    # own box (store id 1, now taken) moves past the largest id in use.
    assert own.id == 1 and ids == [("cat", 1), ("cat", 7), ("dog", 4), ("own", 8)]
