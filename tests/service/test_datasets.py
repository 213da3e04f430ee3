"""Datasets from disk: COCO → store → COCO round trips, re-imports add nothing, every skip
has its reason, VOC and YOLO folders give the same boxes, and nothing reads outside."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from app.config import Settings
from app.jobs import JobCancelled
from app.service import imports
from app.service.datasets import (
    import_coco_dataset,
    import_voc_dataset,
    import_yolo_dataset,
    read_classes,
)
from app.store import Store
from benchmarks.synthetic import CLASSES, SyntheticDataset, coco_annotations, make_dataset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> SyntheticDataset:
    # Awkward sizes: 7 images of 321×243, 3 boxes each.
    return make_dataset(tmp_path_factory.mktemp("ds"), 7, 3, seed=5, size=(321, 243))


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(Settings(data_dir=tmp_path / "data"))


def test_coco_round_trips_through_the_store_with_its_ids(
    dataset: SyntheticDataset, store: Store
) -> None:
    assert dataset.coco is not None
    given = json.loads(dataset.coco.read_text())
    summary = import_coco_dataset(store, dataset.coco, dataset.images_dir)
    assert (summary.images_added, summary.boxes_added, summary.skipped) == (7, 21, [])
    exported = imports.export_coco(store)
    assert coco_annotations(exported) == coco_annotations(given)
    assert len(coco_annotations(given)) == 21
    assert {c["name"] for c in exported["categories"]} == {c["name"] for c in given["categories"]}
    assert sorted(i["file_name"] for i in exported["images"]) == sorted(dataset.file_names)
    # The ids are the file's (1000, 1003, …), not the store's (1, 2, …).
    assert sorted(b.source_id for b in store.boxes()) == [1000 + 3 * k for k in range(21)]


def test_reimport_adds_nothing_and_equal_bytes_are_stored_once(
    dataset: SyntheticDataset, store: Store, tmp_path: Path
) -> None:
    assert dataset.coco is not None
    images = tmp_path / "images"
    shutil.copytree(dataset.images_dir, images)
    document = json.loads(dataset.coco.read_text())
    # A second name for the first image's bytes, with one box of its own.
    shutil.copyfile(images / dataset.file_names[0], images / "copy.jpg")
    document["images"].append({"id": 99, "file_name": "copy.jpg", "width": 321, "height": 243})
    document["annotations"].append(
        {"id": 5, "image_id": 99, "category_id": 1, "bbox": [1, 2, 30, 40]}
    )
    coco = tmp_path / "coco.json"
    coco.write_text(json.dumps(document))
    first = import_coco_dataset(store, coco, images)
    assert (first.images_seen, first.images_added, first.images_present) == (8, 7, 1)
    assert (first.boxes_added, first.boxes_present) == (22, 0)
    assert store.count_images() == 7
    copy_box = next(b for b in store.boxes() if b.source_id == 5)
    assert store.get_image(copy_box.image_id).filename == dataset.file_names[0]
    again = import_coco_dataset(store, coco, images)
    assert (again.images_added, again.images_present) == (0, 8)
    assert (again.boxes_added, again.boxes_present, again.skipped) == (0, 22, [])
    assert len(store.boxes()) == 22


def test_every_skipped_annotation_has_its_reason(
    dataset: SyntheticDataset, store: Store, tmp_path: Path
) -> None:
    assert dataset.coco is not None
    document = json.loads(dataset.coco.read_text())
    outside = tmp_path / "secret.jpg"
    shutil.copyfile(dataset.images_dir / dataset.file_names[1], outside)
    images = tmp_path / "images"
    shutil.copytree(dataset.images_dir, images)
    (images / dataset.file_names[1]).unlink()
    (images / dataset.file_names[1]).symlink_to(outside)  # a link that leads out
    (images / dataset.file_names[2]).unlink()  # a missing image
    document["images"][3]["file_name"] = "../secret.jpg"  # a path that climbs out
    document["annotations"][0]["bbox"] = [400, 10, 5, 5]  # outside its 321×243 image
    document["annotations"][1]["category_id"] = 77  # not a category
    document["annotations"].append(
        {"id": 1, "image_id": 12345, "category_id": 1, "bbox": [0, 0, 2, 2]}
    )  # no such image
    coco = tmp_path / "coco.json"
    coco.write_text(json.dumps(document))
    summary = import_coco_dataset(store, coco, images)
    reasons = {(item.what, item.reason): item.annotations for item in summary.skipped}
    names = dataset.file_names
    assert reasons == {
        ("coco.json", "COCO annotation 1 has category_id 77, not in 'categories'"): 1,
        ("annotations", "their image_id is not in 'images'"): 1,
        (
            f"image {names[0]!r}, annotation 1000",
            "box (400.0, 10.0, 5.0, 5.0) lies outside the 321×243 image; boxes use image "
            "pixels with the origin at the top-left",
        ): 1,
        (f"image {names[1]!r}", f"{names[1]!r} leads outside the images folder {images}"): 3,
        (f"image {names[2]!r}", f"no file {names[2]!r} under the images folder {images}"): 3,
        ("image 'secret.jpg'", f"'../secret.jpg' leads outside the images folder {images}"): 3,
    }
    assert summary.annotations_skipped == 12  # 11 of the 21, and the one without an image
    assert (summary.images_added, summary.boxes_added) == (4, 21 - 11)
    assert len(store.boxes()) == 10 and store.count_images() == 4


def test_voc_and_yolo_folders_give_the_boxes_coco_gives(
    dataset: SyntheticDataset, tmp_path: Path
) -> None:
    assert dataset.coco and dataset.voc_dir and dataset.yolo_dir and dataset.classes_file
    by_format = {}
    for name, run in (
        ("coco", lambda s: import_coco_dataset(s, dataset.coco, dataset.images_dir)),
        ("voc", lambda s: import_voc_dataset(s, dataset.voc_dir)),
        (
            "yolo",
            lambda s: import_yolo_dataset(s, dataset.yolo_dir, read_classes(dataset.classes_file)),
        ),
    ):
        store = Store(Settings(data_dir=tmp_path / name))
        summary = run(store)
        assert (summary.images_added, summary.boxes_added, summary.skipped) == (7, 21, [])
        names = {i.id: i.filename for i in store.images()}
        by_format[name] = sorted(
            (names[b.image_id], b.label, b.x, b.y, b.w, b.h) for b in store.boxes()
        )
        store.close()
    truth = sorted((name, box.label, box.x, box.y, box.w, box.h) for _, name, box in dataset.boxes)
    assert by_format["coco"] == truth and by_format["voc"] == truth
    yolo = by_format["yolo"]
    assert [row[:2] for row in yolo] == [row[:2] for row in truth]
    np.testing.assert_allclose(
        [row[2:] for row in yolo], [row[2:] for row in truth], rtol=0, atol=1e-4
    )


def test_yolo_lines_and_voc_objects_are_skipped_one_by_one(
    dataset: SyntheticDataset, store: Store, tmp_path: Path
) -> None:
    assert dataset.yolo_dir is not None and dataset.voc_dir is not None
    yolo = tmp_path / "yolo"
    shutil.copytree(dataset.yolo_dir, yolo)
    label = yolo / "labels" / f"{Path(dataset.file_names[0]).stem}.txt"
    label.write_text(label.read_text() + "9 0.5 0.5 0.1 0.1\nnot a line\n")
    (yolo / "labels" / f"{Path(dataset.file_names[1]).stem}.txt").unlink()  # no objects
    summary = import_yolo_dataset(store, yolo, list(CLASSES))
    assert [(s.what, s.reason[:22]) for s in summary.skipped] == [
        (f"image {dataset.file_names[0]!r}", "YOLO line 4 has class "),
        (f"image {dataset.file_names[0]!r}", "YOLO line 5 is 'not a "),
    ]
    assert (summary.images_added, summary.boxes_added) == (7, 18)


def test_a_cancel_keeps_what_was_stored_and_a_rerun_finishes(
    dataset: SyntheticDataset, store: Store
) -> None:
    assert dataset.coco is not None
    seen: list[int] = []
    with pytest.raises(JobCancelled):
        import_coco_dataset(
            store,
            dataset.coco,
            dataset.images_dir,
            lambda done, total: seen.append(done),
            lambda: len(seen) >= 3,
        )
    assert seen == [1, 2, 3] and store.count_images() == 3 and len(store.boxes()) == 9
    rerun = import_coco_dataset(store, dataset.coco, dataset.images_dir)
    assert (rerun.images_added, rerun.images_present) == (4, 3)
    assert (rerun.boxes_added, rerun.boxes_present) == (12, 9)


def test_the_synthetic_generator_is_seeded_and_its_domains_differ(tmp_path: Path) -> None:
    a = make_dataset(tmp_path / "a", 2, 2, seed=3, formats=())
    b = make_dataset(tmp_path / "b", 2, 2, seed=3, formats=())
    grey = make_dataset(tmp_path / "g", 2, 2, seed=3, domain="grey", formats=())
    for name_a, name_b in zip(a.file_names, b.file_names, strict=True):
        assert (a.images_dir / name_a).read_bytes() == (b.images_dir / name_b).read_bytes()
    assert [box for *_, box in a.boxes] == [box for *_, box in grey.boxes]
    from PIL import Image

    colour = np.asarray(Image.open(a.images_dir / a.file_names[0]), dtype=np.float64)
    flat = np.asarray(Image.open(grey.images_dir / grey.file_names[0]), dtype=np.float64)
    assert (np.abs(colour[..., 0] - colour[..., 2]) > 40).mean() > 0.01  # photos in colour
    assert np.abs(flat[..., 0] - flat[..., 2]).max() <= 2  # grey (JPEG noise only)

    # Blurred: less high-frequency energy than the colour scene's own grey version.
    def detail(image: np.ndarray) -> float:
        grey_values = image.mean(axis=2)
        return float(np.abs(np.diff(grey_values, axis=1)).mean())

    assert detail(flat) < 0.6 * detail(colour)


def test_a_file_that_is_not_an_image_is_skipped_and_the_rest_go_in(
    dataset: SyntheticDataset, store: Store, tmp_path: Path
) -> None:
    assert dataset.yolo_dir is not None
    yolo = tmp_path / "yolo"
    shutil.copytree(dataset.yolo_dir, yolo)
    (yolo / "images" / dataset.file_names[4]).write_bytes(b"\xff\xd8 not a JPEG")
    summary = import_yolo_dataset(store, yolo, list(CLASSES))
    assert [(s.what, s.reason.split(":")[0], s.annotations) for s in summary.skipped] == [
        (f"image {dataset.file_names[4]!r}", "not stored", 3)
    ]
    assert (summary.images_added, summary.boxes_added) == (6, 18)
