"""Whole datasets from disk into the store: COCO, Pascal VOC and YOLO folders.

One image at a time is read, hashed and stored (the same bytes are stored once, whatever
their names), its annotations checked one by one against the image as displayed, and the
boxes written in transactions of about :data:`app.service.imports.BATCH_BOXES` boxes.
Nothing holds more than one image's bytes. Because :meth:`Store.import_boxes` adds only
what is missing, running an import again adds nothing; a cancel or a crash loses at most
the batch in flight and a rerun finishes the job. Every annotation that is not imported
is reported with its reason.

File paths from annotation files (COCO ``file_name``, VOC ``<filename>``) are resolved
inside the dataset's folder only: a path or symlink that leads out of it is skipped with
its reason, so an annotation file cannot read the rest of the disk.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from app.engine.regions import Box, check_box
from app.formats.coco import CocoAnnotation, CocoDocument, CocoId, decode_coco
from app.formats.records import LabeledBox
from app.formats.voc import parse_voc, voc_file_name
from app.formats.yolo import parse_classes, parse_yolo
from app.jobs import Cancelled, JobCancelled
from app.service.imports import BATCH_BOXES
from app.store import Store

__all__ = [
    "DatasetFormat",
    "DatasetSummary",
    "Skipped",
    "Advance",
    "IMAGE_SUFFIXES",
    "import_coco_dataset",
    "import_voc_dataset",
    "import_yolo_dataset",
    "read_classes",
]

DatasetFormat = Literal["coco", "voc", "yolo"]
Advance = Callable[[int, int], None]
"""``advance(images done, images in all)``: the importer's progress report."""

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif")
"""File endings that VOC and YOLO folders are searched for (any case)."""

_MAX_ANNOTATION_FILE_BYTES = 64 * 1024 * 1024  # one VOC or YOLO file; COCO has its own check


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
class _Annotation:
    """One annotation before it meets its image: where it came from, and its box or why
    it cannot have one."""

    where: str
    box: LabeledBox
    source_id: int | None = None


@dataclass
class _Item:
    """One image of the dataset and a way to read its annotations once its size is known."""

    name: str
    path: Path | None
    problem: str | None
    annotations: Callable[[int, int, list[str]], list[_Annotation]]
    count_hint: int = 0  # annotations lost when the image itself is skipped
    size: tuple[int, int] | None = None  # the size the annotation file declares


def _inside(base: Path, candidate: Path) -> Path | None:
    """``candidate`` resolved (symlinks followed) when it stays inside ``base``, else None."""
    resolved = candidate.resolve()
    return resolved if resolved.is_relative_to(base.resolve()) else None


def _walk(base: Path) -> Iterator[Path]:
    """Files under ``base`` in a stable order, without following symlinked folders."""
    for folder, dirs, files in os.walk(base, followlinks=False):
        dirs.sort()
        for name in sorted(files):
            yield Path(folder) / name


class _Finder:
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
            inside = _inside(self.base, direct)
            if inside is None:
                return None, f"{relative!r} leads outside the images folder {self.base}"
            return inside, None
        if self._by_name is None:
            self._by_name = defaultdict(list)
            for path in _walk(self.base):
                self._by_name[path.name].append(path)
        found = self._by_name.get(parts[-1], [])
        if len(found) > 1:
            return None, (f"{len(found)} files named {parts[-1]!r} under {self.base}; "
                          "give the path relative to the images folder")
        if not found:
            return None, f"no file {relative!r} under the images folder {self.base}"
        inside = _inside(self.base, found[0])
        if inside is None:
            return None, f"{found[0]} is a link that leads outside {self.base}"
        return inside, None


def _run(store: Store, summary: DatasetSummary, items: list[_Item],
         advance: Advance | None, cancelled: Cancelled | None) -> DatasetSummary:
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
            summary.skipped.append(Skipped(f"image {image_id} ({len(wheres[image_id])} "
                                           "boxes)", reason, len(wheres[image_id])))
        boxes.clear()
        source_ids.clear()
        wheres.clear()
        pending = 0

    total = len(items)
    for done, item in enumerate(items, start=1):
        if cancelled is not None and cancelled():
            flush()
            raise JobCancelled("cancelled; the images and boxes stored so far stay, and "
                               "running the import again finishes it")
        summary.images_seen += 1
        pending += _one(store, summary, item, boxes, source_ids, wheres)
        if pending >= BATCH_BOXES:
            flush()
        if advance is not None:
            advance(done, total)
    flush()
    return summary


def _one(store: Store, summary: DatasetSummary, item: _Item,
         boxes: dict[int, list[tuple[float, float, float, float, str]]],
         source_ids: dict[int, list[int | None]], wheres: dict[int, list[str]]) -> int:
    """Store one image and queue its boxes; returns how many boxes it queued."""
    what = f"image {item.name!r}"
    if item.path is None:
        summary.skipped.append(Skipped(what, item.problem or "not found", item.count_hint))
        return 0
    try:
        data = item.path.read_bytes()
        record, created = store.add_image(data, item.name)
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        summary.skipped.append(Skipped(what, f"not stored: {reason}", item.count_hint))
        return 0
    if created:
        summary.images_added += 1
    else:
        summary.images_present += 1
    if item.size is not None and item.size != (record.width, record.height):
        summary.skipped.append(Skipped(
            what, f"the annotations are for a {item.size[0]}×{item.size[1]} image; it is "
            f"{record.width}×{record.height} as displayed", item.count_hint))
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


# -- COCO --------------------------------------------------------------------------------


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
    return _run(store, summary, _coco_items(document, images_dir, summary), advance, cancelled)


def _coco_items(document: CocoDocument, images_dir: Path, summary: DatasetSummary
                ) -> list[_Item]:
    per_image: dict[CocoId, list[CocoAnnotation]] = defaultdict(list)
    for annotation in document.annotations:
        per_image[annotation.image_id].append(annotation)
    known = {image.id for image in document.images}
    orphans = sum(len(v) for k, v in per_image.items() if k not in known)
    if orphans:
        summary.skipped.append(Skipped("annotations", "their image_id is not in 'images'",
                                       orphans))
    finder = _Finder(images_dir)
    items = []
    for image in document.images:
        mine = per_image.get(image.id, [])
        path, problem = finder.find(image.path or image.file_name)
        size = (image.width, image.height) if image.width and image.height else None

        def read(_w: int, _h: int, _reasons: list[str],
                 mine: list[CocoAnnotation] = mine) -> list[_Annotation]:
            return [_Annotation(f"annotation {a.id if a.id is not None else '(no id)'}",
                                a.box, _source_id(a.id)) for a in mine]

        items.append(_Item(image.file_name, path, problem, read, len(mine), size))
    return items


# -- Pascal VOC --------------------------------------------------------------------------


def _read_small(path: Path) -> bytes:
    if path.stat().st_size > _MAX_ANNOTATION_FILE_BYTES:
        raise ValueError(f"{path.name} is larger than {_MAX_ANNOTATION_FILE_BYTES} bytes; "
                         "an annotation file of one image is far smaller")
    return path.read_bytes()


def _image_beside(folders: list[Path], stem: str) -> Path | None:
    for folder in folders:
        for suffix in IMAGE_SUFFIXES:
            for candidate in (folder / f"{stem}{suffix}", folder / f"{stem}{suffix.upper()}"):
                if candidate.is_file():
                    return candidate
    return None


def import_voc_dataset(
    store: Store,
    root: Path,
    images_dir: Path | None = None,
    advance: Advance | None = None,
    cancelled: Cancelled | None = None,
) -> DatasetSummary:
    """Import a Pascal VOC folder: ``Annotations/*.xml`` + ``JPEGImages/``, or XML files
    beside their images.

    An XML file's image is its ``<filename>`` in ``images_dir`` (default ``JPEGImages/``
    when there is one) or beside the XML file, else the image with the XML file's stem.

    Raises:
        ValueError: ``root`` is not a folder or holds no XML files.
            JobCancelled: ``cancelled()`` turned True (what was stored stays).
    """
    if not root.is_dir():
        raise ValueError(f"the VOC folder {root} is not a folder")
    annotations_dir = root / "Annotations" if (root / "Annotations").is_dir() else root
    if images_dir is None and (root / "JPEGImages").is_dir():
        images_dir = root / "JPEGImages"
    xmls = [p for p in _walk(annotations_dir) if p.suffix.lower() == ".xml"]
    if not xmls:
        raise ValueError(f"no .xml files under {annotations_dir}; a VOC folder holds "
                         "Annotations/*.xml and JPEGImages/, or XML files beside the images")
    summary = DatasetSummary("voc")
    items = []
    for xml in xmls:
        folders = ([images_dir] if images_dir is not None else []) + [xml.parent]
        item = _voc_item(root, xml, folders)
        if item is None:
            summary.skipped.append(Skipped(str(xml.relative_to(root)), "not a VOC file "
                                           "(no <annotation>, or unreadable)"))
        else:
            items.append(item)
    return _run(store, summary, items, advance, cancelled)


def _voc_item(root: Path, xml: Path, folders: list[Path]) -> _Item | None:
    try:
        text = _read_small(xml)
        name = voc_file_name(text)
    except (OSError, ValueError):
        return None
    path = None
    if name is not None:
        path = next((f / name for f in folders if (f / name).is_file()), None)
    path = path or _image_beside(folders, xml.stem)
    shown = name or xml.stem
    problem = None
    if path is None:
        problem = f"no image {shown!r} for {xml.name} in {', '.join(map(str, folders))}"
    elif _inside(root, path) is None and not any(_inside(f, path) for f in folders):
        path, problem = None, f"{shown!r} is a link that leads outside {root}"

    def read(width: int, height: int, reasons: list[str]) -> list[_Annotation]:
        boxes = parse_voc(text, width, height, reasons)
        return [_Annotation(f"{xml.name} object {i}", box) for i, box in
                enumerate(boxes, start=1)]

    return _Item(path.name if path is not None else shown, path, problem, read,
                 text.count(b"<object"))


# -- YOLO --------------------------------------------------------------------------------


def import_yolo_dataset(
    store: Store,
    root: Path,
    classes: list[str],
    advance: Advance | None = None,
    cancelled: Cancelled | None = None,
) -> DatasetSummary:
    """Import a YOLO folder: ``images/`` + ``labels/`` (same sub-folders, ``.txt`` per
    image), or ``.txt`` files beside their images. An image without a labels file is an
    image without objects (stored, no boxes).

    Raises:
        ValueError: ``root`` is not a folder, or holds no images.
            JobCancelled: ``cancelled()`` turned True (what was stored stays).
    """
    if not root.is_dir():
        raise ValueError(f"the YOLO folder {root} is not a folder")
    images_dir = root / "images" if (root / "images").is_dir() else root
    labels_dir = root / "labels" if (root / "labels").is_dir() else images_dir
    pictures = [p for p in _walk(images_dir) if p.suffix.lower() in IMAGE_SUFFIXES]
    if not pictures:
        raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {images_dir}; a "
                         "YOLO folder holds images/ and labels/")
    items = []
    for picture in pictures:
        label_file = (labels_dir / picture.relative_to(images_dir)).with_suffix(".txt")
        inside = _inside(root, picture)
        problem = None if inside is not None else f"{picture} is a link that leads outside {root}"
        hint = 0
        if inside is None and label_file.is_file():
            hint = sum(1 for line in label_file.read_text(errors="replace").splitlines()
                       if line.strip())
        items.append(_yolo_item(picture.name, inside, problem, label_file, classes, hint))
    return _run(store, DatasetSummary("yolo"), items, advance, cancelled)


def _yolo_item(name: str, path: Path | None, problem: str | None, label_file: Path,
               classes: list[str], hint: int) -> _Item:
    def read(width: int, height: int, reasons: list[str]) -> list[_Annotation]:
        if not label_file.is_file():
            return []
        try:
            text = _read_small(label_file).decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"{label_file.name} is not UTF-8 text") from None
        boxes = parse_yolo(text, classes, width, height, reasons)
        return [_Annotation(f"{label_file.name} box {i}", box)
                for i, box in enumerate(boxes, start=1)]

    return _Item(name, path, problem, read, hint)


def read_classes(path: Path) -> list[str]:
    """YOLO class names from a file (one per line, or comma-separated).

    Raises:
        ValueError: unreadable, not UTF-8, or no clean names.
    """
    try:
        return parse_classes(_read_small(path).decode("utf-8"))
    except OSError as exc:
        raise ValueError(f"cannot read the classes file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ValueError(f"the classes file {path} is not UTF-8 text") from None
