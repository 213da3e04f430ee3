"""COCO: a JSON file and the folder its images are found under."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from app.formats.coco import CocoAnnotation, CocoDocument, CocoId, decode_coco
from app.jobs import Cancelled
from app.service.datasets.base import (
    Advance,
    Annotation,
    DatasetSummary,
    Finder,
    Item,
    Skipped,
    run_items,
)
from app.store import Store

__all__ = ["import_coco_dataset"]


def _source_id(value: CocoId | None) -> int | None:
    return value if isinstance(value, int) else None


def import_coco_dataset(
    store: Store,
    annotations: Path,
    images_dir: Path,
    advance: Advance | None = None,
    cancelled: Cancelled | None = None,
) -> DatasetSummary:
    """Import a COCO JSON file and the images it names from ``images_dir``.

    An image is looked up at its ``file_name`` under ``images_dir``, else by the last part
    of the name anywhere under it. Images without annotations are stored too. Integer
    annotation ids are kept on the boxes (``source_id``), so an export gives them back.

    Raises:
        ValueError: the file is not COCO JSON (its shape or categories), or a path is not
            there. JobCancelled: ``cancelled()`` turned True (what was stored stays).
    """
    if not images_dir.is_dir():
        raise ValueError(f"the images folder {images_dir} is not a folder")
    reasons: list[str] = []
    try:
        raw = annotations.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read {annotations}: {exc.strerror or exc}") from None
    document = decode_coco(raw, reasons)
    summary = DatasetSummary("coco")
    summary.skipped.extend(Skipped(str(annotations.name), reason) for reason in reasons)
    return run_items(store, summary, _coco_items(document, images_dir, summary), advance, cancelled)


def _coco_items(document: CocoDocument, images_dir: Path, summary: DatasetSummary) -> list[Item]:
    per_image: dict[CocoId, list[CocoAnnotation]] = defaultdict(list)
    for annotation in document.annotations:
        per_image[annotation.image_id].append(annotation)
    known = {image.id for image in document.images}
    orphans = sum(len(v) for k, v in per_image.items() if k not in known)
    if orphans:
        summary.skipped.append(Skipped("annotations", "their image_id is not in 'images'", orphans))
    finder = Finder(images_dir)
    items = []
    for image in document.images:
        mine = per_image.get(image.id, [])
        path, problem = finder.find(image.path or image.file_name)
        size = (image.width, image.height) if image.width and image.height else None

        def read(
            _w: int, _h: int, _reasons: list[str], mine: list[CocoAnnotation] = mine
        ) -> list[Annotation]:
            return [
                Annotation(
                    f"annotation {a.id if a.id is not None else '(no id)'}", a.box, _source_id(a.id)
                )
                for a in mine
            ]

        items.append(Item(image.file_name, path, problem, read, len(mine), size))
    return items
