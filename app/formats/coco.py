"""COCO JSON: read a detection file into checked records, write one from boxes.

``bbox`` is ``[x, y, w, h]`` in pixels, the same as FeatureGap's boxes. Reading checks
every level and raises ``ValueError`` naming the first thing to fix: ids are integers (or
strings) that a database can hold, never bools, floats, lists or objects; numbers are
finite; category names are clean labels (:func:`app.formats.labels.clean_label`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from app.formats.labels import clean_label
from app.formats.records import LabeledBox, finite_number

__all__ = [
    "CocoId",
    "CocoImage",
    "CocoAnnotation",
    "CocoDocument",
    "decode_coco",
    "parse_coco",
    "write_coco",
    "annotation_count",
]

CocoId = int | str
_MAX_ID = 2**63 - 1
_MAX_ID_CHARS = 255


@dataclass(frozen=True)
class CocoImage:
    """One entry of ``images``: its id, file name (last path part) and optional size.

    ``path`` is ``file_name`` as the file wrote it (separators turned to ``/``), which a
    dataset import resolves under its images folder.
    """

    id: CocoId
    file_name: str
    width: int | None = None
    height: int | None = None
    path: str = field(default="", compare=False)


@dataclass(frozen=True)
class CocoAnnotation:
    """One entry of ``annotations`` with its category already turned into a label."""

    id: CocoId | None
    image_id: CocoId
    box: LabeledBox


@dataclass(frozen=True)
class CocoDocument:
    """A checked COCO document: images, annotations and category names by id."""

    images: list[CocoImage]
    annotations: list[CocoAnnotation]
    categories: dict[CocoId, str]


def decode_coco(raw: bytes, skipped: list[str] | None = None) -> CocoDocument:
    """Parse the bytes of a COCO JSON file.

    Args:
        raw: the file's bytes.
        skipped: when given, images and annotations that fail their checks are left out
            and their reasons appended here, instead of refusing the whole file.

    Raises:
        ValueError: not UTF-8 JSON (also: nested too deep, or an integer too long for
            Python's JSON reader), or not COCO-shaped (see :func:`parse_coco`).
    """
    try:
        document = json.loads(raw)
    except RecursionError:
        raise ValueError(
            "the COCO file is not JSON this reader accepts (nested too deep)"
        ) from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, too many digits
        raise ValueError(f"the COCO file is not JSON ({exc})") from None
    return parse_coco(document, skipped)


def annotation_count(document: CocoDocument) -> int:
    """How many annotations the document has."""
    return len(document.annotations)


def parse_coco(document: Any, skipped: list[str] | None = None) -> CocoDocument:
    """Check a decoded COCO document and turn it into records.

    Args:
        document: what ``json.loads`` gave.
        skipped: when given, an image or annotation entry that fails its checks is left
            out and ``"<which entry>: <reason>"`` appended here (a dataset import goes on
            past a bad entry); the categories and the document's shape are always checked.

    Raises:
        ValueError: the document is not an object with ``images``, ``annotations`` and
            ``categories`` lists, or any entry lacks a key or has a value of the wrong type:
            ids must be integers in 0..2⁶³−1 or short strings, ``bbox`` four finite numbers,
            ``category_id`` one of the categories, ``width``/``height`` positive integers.
    """
    if not isinstance(document, dict):
        raise ValueError(
            "a COCO file is a JSON object with 'images', 'annotations' and 'categories' lists"
        )
    for key in ("images", "annotations", "categories"):
        if not isinstance(document.get(key), list):
            raise ValueError(f"the COCO file needs a list '{key}'")
    categories: dict[CocoId, str] = {}
    for index, category in enumerate(document["categories"]):
        where = f"COCO category {index}"
        if not isinstance(category, dict) or "id" not in category or "name" not in category:
            raise ValueError(f"{where}: every COCO category needs an 'id' and a string 'name'")
        category_id = _id(category["id"], f"{where}'s 'id'")
        if category_id in categories:
            raise ValueError(f"{where}: the id {category_id!r} is used twice in 'categories'")
        categories[category_id] = clean_label(category["name"], f"{where}'s 'name'")
    images: list[CocoImage] = []
    seen: set[CocoId] = set()
    for index, entry in enumerate(document["images"]):
        try:
            image = _image(entry, index)
            if image.id in seen:
                raise ValueError(f"the COCO image id {image.id!r} is used twice in 'images'")
        except ValueError as exc:
            if skipped is None:
                raise
            skipped.append(str(exc))
            continue
        seen.add(image.id)
        images.append(image)
    annotations: list[CocoAnnotation] = []
    for index, entry in enumerate(document["annotations"]):
        try:
            annotations.append(_annotation(entry, index, categories))
        except ValueError as exc:
            if skipped is None:
                raise
            skipped.append(str(exc))
    return CocoDocument(images, annotations, categories)


def _id(value: Any, what: str) -> CocoId:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"{what} must be an integer (or a string), got {type(value).__name__}")
    if isinstance(value, int) and not 0 <= value <= _MAX_ID:
        raise ValueError(f"{what} must be an integer from 0 to {_MAX_ID}, got {str(value)[:40]}")
    if isinstance(value, str) and not 0 < len(value) <= _MAX_ID_CHARS:
        raise ValueError(
            f"{what} as a string has 1 to {_MAX_ID_CHARS} characters, got {len(value)}"
        )
    return value


def _size(value: Any, what: str) -> int | None:
    if value is None:
        return None
    number = finite_number(value, what)
    if number < 1 or not number.is_integer() or number > _MAX_ID:
        raise ValueError(f"{what} must be a positive whole number of pixels, got {value!r}")
    return int(number)


def _image(entry: Any, index: int) -> CocoImage:
    where = f"COCO image {index}"
    if (
        not isinstance(entry, dict)
        or "id" not in entry
        or not isinstance(entry.get("file_name"), str)
    ):
        raise ValueError(f"{where}: every COCO image needs an 'id' and a string 'file_name'")
    path = entry["file_name"].replace("\\", "/")
    return CocoImage(
        _id(entry["id"], f"{where}'s 'id'"),
        path.rsplit("/", 1)[-1],
        _size(entry.get("width"), f"{where}'s 'width'"),
        _size(entry.get("height"), f"{where}'s 'height'"),
        path,
    )


def _annotation(entry: Any, index: int, categories: dict[CocoId, str]) -> CocoAnnotation:
    where = f"COCO annotation {index}"
    if not isinstance(entry, dict):
        raise ValueError(f"{where} is not an object")
    for key in ("image_id", "category_id", "bbox"):
        if key not in entry:
            raise ValueError(f"{where} needs '{key}'")
    bbox = entry["bbox"]
    if not isinstance(bbox, list) or len(bbox) != 4:
        raise ValueError(f"{where} needs 'bbox': [x, y, w, h] numbers")
    x, y, w, h = (finite_number(v, f"{where}'s 'bbox' value") for v in bbox)
    category = _id(entry["category_id"], f"{where}'s 'category_id'")
    if category not in categories:
        raise ValueError(f"{where} has category_id {category!r}, not in 'categories'")
    annotation_id = None if entry.get("id") is None else _id(entry["id"], f"{where}'s 'id'")
    return CocoAnnotation(
        annotation_id,
        _id(entry["image_id"], f"{where}'s 'image_id'"),
        LabeledBox(x, y, w, h, categories[category]),
    )


def write_coco(
    images: Sequence[CocoImage], boxes: Sequence[tuple[CocoId, CocoId, LabeledBox]]
) -> dict[str, Any]:
    """One COCO document from images and ``(box id, image id, box)`` triples.

    Category ids number the labels in sorted order from 1.
    """
    labels = sorted({box.label for _, _, box in boxes})
    category_ids = {label: i + 1 for i, label in enumerate(labels)}
    return {
        "info": {"description": "FeatureGap export"},
        "images": [
            {"id": i.id, "file_name": i.file_name, "width": i.width, "height": i.height}
            for i in images
        ],
        "annotations": [
            {
                "id": box_id,
                "image_id": image_id,
                "category_id": category_ids[box.label],
                "bbox": [box.x, box.y, box.w, box.h],
                "area": box.w * box.h,
                "iscrowd": 0,
            }
            for box_id, image_id, box in boxes
        ],
        "categories": [
            {"id": category_ids[label], "name": label, "supercategory": ""} for label in labels
        ],
    }
