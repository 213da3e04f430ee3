"""Pascal VOC: ``Annotations/*.xml`` + ``JPEGImages/``, or XML files beside their images."""

from __future__ import annotations

from pathlib import Path

from app.formats.voc import parse_voc, voc_file_name
from app.jobs import Cancelled
from app.service.datasets.base import (
    IMAGE_SUFFIXES,
    Advance,
    Annotation,
    DatasetSummary,
    Item,
    Skipped,
    read_small,
    resolve_inside,
    run_items,
    walk,
)
from app.store import Store

__all__ = ["import_voc_dataset"]


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
    xmls = [p for p in walk(annotations_dir) if p.suffix.lower() == ".xml"]
    if not xmls:
        raise ValueError(
            f"no .xml files under {annotations_dir}; a VOC folder holds "
            "Annotations/*.xml and JPEGImages/, or XML files beside the images"
        )
    summary = DatasetSummary("voc")
    items = []
    for xml in xmls:
        folders = ([images_dir] if images_dir is not None else []) + [xml.parent]
        item = _voc_item(root, xml, folders)
        if item is None:
            summary.skipped.append(
                Skipped(
                    str(xml.relative_to(root)), "not a VOC file (no <annotation>, or unreadable)"
                )
            )
        else:
            items.append(item)
    return run_items(store, summary, items, advance, cancelled)


def _voc_item(root: Path, xml: Path, folders: list[Path]) -> Item | None:
    try:
        text = read_small(xml)
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
    elif resolve_inside(root, path) is None and not any(resolve_inside(f, path) for f in folders):
        path, problem = None, f"{shown!r} is a link that leads outside {root}"

    def read(width: int, height: int, reasons: list[str]) -> list[Annotation]:
        boxes = parse_voc(text, width, height, reasons)
        return [Annotation(f"{xml.name} object {i}", box) for i, box in enumerate(boxes, start=1)]

    return Item(
        path.name if path is not None else shown, path, problem, read, text.count(b"<object")
    )
