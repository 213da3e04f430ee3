"""The importer's core, shared by every format: records, the safe file lookups, the loop.

See :mod:`app.service.datasets` for what an import does.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from app.boxes import Box, check_box
from app.formats.records import LabeledBox
from app.jobs import Cancelled, JobCancelled
from app.service.imports import BATCH_BOXES
from app.store import Store

__all__ = [
    "Advance",
    "Annotation",
    "DatasetFormat",
    "DatasetSummary",
    "Finder",
    "IMAGE_SUFFIXES",
    "Item",
    "MAX_ANNOTATION_FILE_BYTES",
    "Skipped",
    "resolve_inside",
    "read_small",
    "run_items",
    "walk",
]

DatasetFormat = Literal["coco", "voc", "yolo"]
Advance = Callable[[int, int], None]
"""``advance(images done, images in all)``: the importer's progress report."""

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif")
"""File endings that VOC and YOLO folders are searched for (any case)."""

MAX_ANNOTATION_FILE_BYTES = 64 * 1024 * 1024  # one VOC or YOLO file; COCO has its own check


@dataclass(frozen=True)
class Skipped:
    """Something not imported: what (an image, a file, an annotation), why, and how many
    annotations went with it."""

    what: str
    reason: str
    annotations: int = 1


@dataclass
class DatasetSummary:
    """What a dataset import did: images stored or found stored, boxes added or found, and
    everything skipped with its reason."""

    format: str
    images_seen: int = 0
    images_added: int = 0
    images_present: int = 0
    boxes_added: int = 0
    boxes_present: int = 0
    skipped: list[Skipped] = field(default_factory=list)

    @property
    def annotations_skipped(self) -> int:
        """How many annotations were not imported, in all."""
        return sum(item.annotations for item in self.skipped)

    def as_dict(self, max_skipped: int | None = None) -> dict[str, Any]:
        """The summary as JSON-ready values (the CLI's report and the job's result).

        Args:
            max_skipped: list at most this many skipped items (``skipped_listed`` says how
                many are listed; the count ``annotations_skipped`` is always complete).
        """
        out = {**asdict(self), "annotations_skipped": self.annotations_skipped}
        if max_skipped is not None:
            out["skipped"] = out["skipped"][:max_skipped]
        out["skipped_listed"] = len(out["skipped"])
        return out


@dataclass
class Annotation:
    """One annotation before it meets its image: where it came from, and its box or why
    it cannot have one."""

    where: str
    box: LabeledBox
    source_id: int | None = None


@dataclass
class Item:
    """One image of the dataset and a way to read its annotations once its size is known."""

    name: str
    path: Path | None
    problem: str | None
    annotations: Callable[[int, int, list[str]], list[Annotation]]
    count_hint: int = 0  # annotations lost when the image itself is skipped
    size: tuple[int, int] | None = None  # the size the annotation file declares


def resolve_inside(base: Path, candidate: Path) -> Path | None:
    """``candidate`` resolved (symlinks followed) when it stays inside ``base``, else None."""
    resolved = candidate.resolve()
    return resolved if resolved.is_relative_to(base.resolve()) else None


def walk(base: Path) -> Iterator[Path]:
    """Files under ``base`` in a stable order, without following symlinked folders."""
    for folder, dirs, files in os.walk(base, followlinks=False):
        dirs.sort()
        for name in sorted(files):
            yield Path(folder) / name


class Finder:
    """Finds an image file by its relative path, else by its last path part (an index of
    the folder's file names, built once on first need)."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self._by_name: dict[str, list[Path]] | None = None

    def find(self, relative: str) -> tuple[Path | None, str | None]:
        """The file, or None and why not."""
        parts = [p for p in relative.replace("\\", "/").split("/") if p not in ("", ".")]
        if not parts:
            return None, "no file name"
        direct = self.base.joinpath(*parts)
        if direct.is_file():
            inside = resolve_inside(self.base, direct)
            if inside is None:
                return None, f"{relative!r} leads outside the images folder {self.base}"
            return inside, None
        if self._by_name is None:
            self._by_name = defaultdict(list)
            for path in walk(self.base):
                self._by_name[path.name].append(path)
        found = self._by_name.get(parts[-1], [])
        if len(found) > 1:
            return None, (
                f"{len(found)} files named {parts[-1]!r} under {self.base}; "
                "give the path relative to the images folder"
            )
        if not found:
            return None, f"no file {relative!r} under the images folder {self.base}"
        inside = resolve_inside(self.base, found[0])
        if inside is None:
            return None, f"{found[0]} is a link that leads outside {self.base}"
        return inside, None


def run_items(
    store: Store,
    summary: DatasetSummary,
    items: list[Item],
    advance: Advance | None,
    cancelled: Cancelled | None,
) -> DatasetSummary:
    """Store every item's image, then its checked boxes in batches (see the module doc)."""
    boxes: dict[int, list[tuple[float, float, float, float, str]]] = defaultdict(list)
    source_ids: dict[int, list[int | None]] = defaultdict(list)
    wheres: dict[int, list[str]] = defaultdict(list)
    pending = 0

    def flush() -> None:
        nonlocal pending
        if not boxes:
            return
        count = store.import_boxes(boxes, source_ids)
        summary.boxes_added += count.added
        summary.boxes_present += count.present
        for image_id, reason in count.skipped.items():
            summary.skipped.append(
                Skipped(
                    f"image {image_id} ({len(wheres[image_id])} boxes)",
                    reason,
                    len(wheres[image_id]),
                )
            )
        boxes.clear()
        source_ids.clear()
        wheres.clear()
        pending = 0

    total = len(items)
    for done, item in enumerate(items, start=1):
        if cancelled is not None and cancelled():
            flush()
            raise JobCancelled(
                "cancelled; the images and boxes stored so far stay, and "
                "running the import again finishes it"
            )
        summary.images_seen += 1
        pending += _one(store, summary, item, boxes, source_ids, wheres)
        if pending >= BATCH_BOXES:
            flush()
        if advance is not None:
            advance(done, total)
    flush()
    return summary


def _one(
    store: Store,
    summary: DatasetSummary,
    item: Item,
    boxes: dict[int, list[tuple[float, float, float, float, str]]],
    source_ids: dict[int, list[int | None]],
    wheres: dict[int, list[str]],
) -> int:
    """Store one image and queue its boxes; returns how many boxes it queued."""
    what = f"image {item.name!r}"
    if item.path is None:
        summary.skipped.append(Skipped(what, item.problem or "not found", item.count_hint))
        return 0
    try:
        data = item.path.read_bytes()
    except OSError as exc:
        summary.skipped.append(Skipped(what, f"not read: {exc.strerror or exc}", item.count_hint))
        return 0
    try:
        # A store that cannot write (a full disk) raises on: every later image would fail.
        record, created = store.add_image(data, item.name)
    except ValueError as exc:  # not an image, or too many pixels
        summary.skipped.append(Skipped(what, f"not stored: {exc}", item.count_hint))
        return 0
    if created:
        summary.images_added += 1
    else:
        summary.images_present += 1
    if item.size is not None and item.size != (record.width, record.height):
        summary.skipped.append(
            Skipped(
                what,
                f"the annotations are for a {item.size[0]}×{item.size[1]} image; it is "
                f"{record.width}×{record.height} as displayed",
                item.count_hint,
            )
        )
        return 0
    reasons: list[str] = []
    try:
        annotations = item.annotations(record.width, record.height, reasons)
    except (OSError, ValueError) as exc:
        summary.skipped.append(Skipped(what, str(exc), max(item.count_hint, 1)))
        return 0
    summary.skipped.extend(Skipped(what, reason) for reason in reasons)
    queued = 0
    for annotation in annotations:
        box = annotation.box
        try:
            check_box(Box(box.x, box.y, box.w, box.h), record.width, record.height)
        except ValueError as exc:
            summary.skipped.append(Skipped(f"{what}, {annotation.where}", str(exc)))
            continue
        boxes[record.id].append(box.as_tuple())
        source_ids[record.id].append(annotation.source_id)
        wheres[record.id].append(annotation.where)
        queued += 1
    return queued


def read_small(path: Path) -> bytes:
    if path.stat().st_size > MAX_ANNOTATION_FILE_BYTES:
        raise ValueError(
            f"{path.name} is larger than {MAX_ANNOTATION_FILE_BYTES} bytes; "
            "an annotation file of one image is far smaller"
        )
    return path.read_bytes()
