"""YOLO: ``images/`` + ``labels/`` (one ``.txt`` per image), with a class-names file."""

from __future__ import annotations

from contextlib import suppress
from pathlib import Path

from app.formats.yolo import parse_classes, parse_yolo
from app.jobs import Cancelled
from app.service.datasets.base import (
    IMAGE_SUFFIXES,
    Advance,
    Annotation,
    DatasetSummary,
    Item,
    read_small,
    resolve_inside,
    run_items,
    walk,
)
from app.store import Store

__all__ = ["import_yolo_dataset", "read_classes"]


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
    pictures = [p for p in walk(images_dir) if p.suffix.lower() in IMAGE_SUFFIXES]
    if not pictures:
        raise ValueError(
            f"no images ({', '.join(IMAGE_SUFFIXES)}) under {images_dir}; a "
            "YOLO folder holds images/ and labels/"
        )
    items = []
    for picture in pictures:
        label_file = (labels_dir / picture.relative_to(images_dir)).with_suffix(".txt")
        inside = resolve_inside(root, picture)
        problem = None if inside is not None else f"{picture} is a link that leads outside {root}"
        # How many annotations go if the image is skipped (small files, read twice).
        hint = 0
        with suppress(OSError, ValueError):  # an unreadable file is reported when read
            if label_file.is_file():
                hint = sum(1 for line in read_small(label_file).splitlines() if line.strip())
        items.append(_yolo_item(picture.name, inside, problem, label_file, classes, hint))
    return run_items(store, DatasetSummary("yolo"), items, advance, cancelled)


def _yolo_item(
    name: str,
    path: Path | None,
    problem: str | None,
    label_file: Path,
    classes: list[str],
    hint: int,
) -> Item:
    def read(width: int, height: int, reasons: list[str]) -> list[Annotation]:
        if not label_file.is_file():
            return []
        try:
            text = read_small(label_file).decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"{label_file.name} is not UTF-8 text") from None
        boxes = parse_yolo(text, classes, width, height, reasons)
        return [
            Annotation(f"{label_file.name} box {i}", box) for i, box in enumerate(boxes, start=1)
        ]

    return Item(name, path, problem, read, hint)


def read_classes(path: Path) -> list[str]:
    """YOLO class names from a file (one per line, or comma-separated).

    Raises:
        ValueError: unreadable, not UTF-8, or no clean names.
    """
    try:
        return parse_classes(read_small(path).decode("utf-8"))
    except OSError as exc:
        raise ValueError(f"cannot read the classes file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ValueError(f"the classes file {path} is not UTF-8 text") from None
