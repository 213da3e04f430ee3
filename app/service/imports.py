"""Annotation files in and out of the store: the codecs of :mod:`app.formats` joined to it.

COCO imports match the file's images to stored images by file name (its last path part,
NFC) and run in batches of about :data:`BATCH_BOXES` boxes, one transaction each, so a
cancel or a crash loses at most the batch in flight; because :meth:`Store.import_boxes` is
idempotent, running the same file again (a retry, or by mistake) adds exactly what is
missing and nothing twice.
"""

from __future__ import annotations

import unicodedata
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from app.formats.coco import CocoDocument, CocoId, CocoImage, write_coco
from app.formats.records import LabeledBox
from app.formats.voc import write_voc
from app.formats.yolo import write_yolo
from app.jobs import JobCancelled, Progress
from app.store import ImageRecord, Store

__all__ = [
    "BATCH_BOXES",
    "ImportSummary",
    "import_coco",
    "import_into_image",
    "export_coco",
    "export_voc",
    "export_yolo",
]

BATCH_BOXES = 1000
"""About how many boxes one import transaction writes (an image is never split)."""


@dataclass
class ImportSummary:
    """What an import added, found already there, and skipped (each with its reason)."""

    boxes_added: int = 0
    boxes_present: int = 0
    images_matched: int = 0
    skipped: list[str] = field(default_factory=list)


def _name_key(name: str) -> str:
    return unicodedata.normalize("NFC", name).strip()


def _match_images(
    store: Store, document: CocoDocument, summary: ImportSummary
) -> dict[CocoId, ImageRecord]:
    stored: dict[str, ImageRecord] = {}
    for record in store.images():
        stored.setdefault(_name_key(record.filename), record)
    targets: dict[CocoId, ImageRecord] = {}
    for entry in document.images:
        match = stored.get(_name_key(entry.file_name))
        if match is None:
            summary.skipped.append(
                f"image {entry.file_name!r}: not uploaded (upload it first, same file name)"
            )
            continue
        if None not in (entry.width, entry.height) and (entry.width, entry.height) != (
            match.width,
            match.height,
        ):
            summary.skipped.append(
                f"image {entry.file_name!r}: COCO says {entry.width}×{entry.height}, the "
                f"stored image is {match.width}×{match.height} as displayed"
            )
            continue
        targets[entry.id] = match
    return targets


def _batches(per_image: dict[int, list[LabeledBox]]) -> list[dict[int, list[LabeledBox]]]:
    batches: list[dict[int, list[LabeledBox]]] = []
    current: dict[int, list[LabeledBox]] = {}
    size = 0
    for image_id, boxes in per_image.items():
        if current and size + len(boxes) > BATCH_BOXES:
            batches.append(current)
            current, size = {}, 0
        current[image_id] = boxes
        size += len(boxes)
    if current:
        batches.append(current)
    return batches


def import_coco(
    store: Store,
    document: CocoDocument,
    progress: Progress | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> ImportSummary:
    """Add a COCO document's boxes to the stored images with the same file names.

    Each image's boxes are added all or none; an image whose boxes cannot be added is
    skipped with the reason. Boxes already in the store (same image, label and geometry)
    are counted in ``boxes_present``, not added again. Integer annotation ids are kept on
    the boxes added (``source_id``), so :func:`export_coco` gives them back.

    Raises:
        JobCancelled: ``cancelled()`` turned True; the batches written so far stay.
    """
    summary = ImportSummary()
    targets = _match_images(store, document, summary)
    summary.images_matched = len(targets)
    known = {entry.id for entry in document.images}
    per_image: dict[int, list[LabeledBox]] = defaultdict(list)
    source_ids: dict[int, list[int | None]] = defaultdict(list)
    orphans = 0
    for annotation in document.annotations:
        record = targets.get(annotation.image_id)
        if record is not None:
            per_image[record.id].append(annotation.box)
            source_ids[record.id].append(annotation.id if isinstance(annotation.id, int) else None)
        elif annotation.image_id not in known:
            orphans += 1
    if orphans:
        summary.skipped.append(f"{orphans} annotations: their image_id is not in 'images'")
    batches = _batches(per_image)
    for done, batch in enumerate(batches, start=1):
        if cancelled is not None and cancelled():
            raise JobCancelled()
        count = store.import_boxes(
            {image_id: [b.as_tuple() for b in boxes] for image_id, boxes in batch.items()},
            {image_id: source_ids[image_id] for image_id in batch},
        )
        summary.boxes_added += count.added
        summary.boxes_present += count.present
        summary.skipped.extend(
            f"image {image_id}: {reason}" for image_id, reason in count.skipped.items()
        )
        if progress is not None:
            progress(done / len(batches), f"{done}/{len(batches)} batches")
    return summary


def import_into_image(
    store: Store, image: ImageRecord, boxes: Sequence[LabeledBox]
) -> ImportSummary:
    """Add one image's boxes from a VOC or YOLO file (all or none; those there stay once).

    Raises:
        ValueError: a box is empty, outside the image, or past the per-image limit.
    """
    count = store.import_image_boxes(image.id, [b.as_tuple() for b in boxes])
    return ImportSummary(count.added, count.present, 1, [])


def _labeled(store: Store, image_id: int | None = None) -> list[tuple[int, int, LabeledBox]]:
    return [
        (b.id, b.image_id, LabeledBox(b.x, b.y, b.w, b.h, b.label))
        for b in store.boxes(image_id=image_id)
    ]


def export_coco(store: Store) -> dict[str, object]:
    """Every stored image and box as one COCO document (category ids by sorted label).

    A box imported with an integer annotation id (its ``source_id``) is written with that
    id, so a COCO file round-trips its ids; the other boxes keep their store id unless a
    kept id took it, then they get ids past the largest one in use. Ids stay unique.
    """
    images = [CocoImage(i.id, i.filename, i.width, i.height) for i in store.images()]
    records = store.boxes()
    kept = Counter(b.source_id for b in records if b.source_id is not None)
    used = {source for source, n in kept.items() if n == 1}
    ids: list[int] = []
    spare = max([*used, *(b.id for b in records), 0])
    for record in records:
        if record.source_id is not None and kept[record.source_id] == 1:
            ids.append(record.source_id)
        elif record.id not in used:
            ids.append(record.id)
            used.add(record.id)
        else:
            spare += 1
            ids.append(spare)
    boxes = [
        (box_id, b.image_id, LabeledBox(b.x, b.y, b.w, b.h, b.label))
        for box_id, b in zip(ids, records, strict=True)
    ]
    return write_coco(images, boxes)


def export_voc(store: Store, image: ImageRecord) -> str:
    """The image's boxes as a Pascal VOC annotation."""
    boxes = [box for _, _, box in _labeled(store, image.id)]
    return write_voc(image.filename, image.width, image.height, boxes)


def export_yolo(store: Store, image: ImageRecord, classes: Sequence[str]) -> str:
    """The image's boxes as YOLO lines, class indices into ``classes``.

    Raises:
        ValueError: a box label is not in ``classes``.
    """
    boxes = [(box_id, box) for box_id, _, box in _labeled(store, image.id)]
    return write_yolo(image.width, image.height, boxes, classes)
