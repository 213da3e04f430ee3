"""YOLO txt: lines ``class cx cy w h`` normalised by the image size.

Boxes read are rounded to 1e-4 pixel, far below what the 8 decimals written carry.

Class names come as a list (index 0 first): :func:`parse_classes` reads one name per line
or comma-separated names. Writing needs the class list too; a label outside it is an error
that names the missing class.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from app.formats.labels import clean_label
from app.formats.records import LabeledBox

__all__ = ["parse_classes", "parse_yolo", "write_yolo"]


def parse_classes(text: str) -> list[str]:
    """Class names from one per line or comma-separated text, index 0 first.

    Raises:
        ValueError: no names, or a name that is not a clean label.
    """
    separator = "\n" if "\n" in text.strip() else ","
    names = [
        clean_label(name, f"YOLO class name {name.strip()[:40]!r}")
        for name in text.split(separator)
        if name.strip()
    ]
    if not names:
        raise ValueError(
            "give the YOLO class names, one per line or comma-separated, index 0 first"
        )
    return names


def parse_yolo(
    text: str,
    classes: Sequence[str],
    width: int,
    height: int,
    skipped: list[str] | None = None,
) -> list[LabeledBox]:
    """Boxes from YOLO lines for a ``width × height`` image.

    Args:
        text: the txt file's text.
        classes: class names, index 0 first.
        width: the image's width as displayed.
        height: the image's height as displayed.
        skipped: when given, a line that fails its checks is left out and its reason
            appended here instead of refusing the file.

    Raises:
        ValueError: a line without exactly five fields, a class that is not an integer index
            into ``classes``, or a coordinate that is not a finite number.
    """
    boxes: list[LabeledBox] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.split():
            continue
        try:
            boxes.append(_line(number, line, classes, width, height))
        except ValueError as exc:
            if skipped is None:
                raise
            skipped.append(str(exc))
    return boxes


def _line(number: int, line: str, classes: Sequence[str], width: int, height: int) -> LabeledBox:
    fields = line.split()
    try:
        if len(fields) != 5:
            raise ValueError
        index = int(fields[0])
        cx, cy, w, h = (float(v) for v in fields[1:5])
        if not all(math.isfinite(v) for v in (cx, cy, w, h)):
            raise ValueError
    except ValueError:
        raise ValueError(
            f"YOLO line {number} is {line[:80]!r}; write 'class cx cy w h' "
            "with an integer class and four finite numbers in 0..1"
        ) from None
    if not 0 <= index < len(classes):
        raise ValueError(
            f"YOLO line {number} has class {index}, but only "
            f"{len(classes)} class names were given ({list(classes)[:20]})"
        )
    # Rounded to 1e-4 px (the text carries about 1e-6 of the side): the same box read from
    # YOLO and from COCO or VOC is then the same box, not a float-noise twin.
    x, y = round((cx - w / 2) * width, 4), round((cy - h / 2) * height, 4)
    return LabeledBox(x, y, round(w * width, 4), round(h * height, 4), classes[index])


def write_yolo(
    width: int, height: int, boxes: Sequence[tuple[int, LabeledBox]], classes: Sequence[str]
) -> str:
    """``(box id, box)`` pairs of one image as YOLO lines, class indices into ``classes``.

    Raises:
        ValueError: a box label is not in ``classes``.
    """
    index = {name: i for i, name in enumerate(classes)}
    lines = []
    for box_id, box in boxes:
        if box.label not in index:
            raise ValueError(
                f"box {box_id} has label {box.label!r}, not in the classes "
                f"{list(classes)}; add it to 'classes'"
            )
        cx = (box.x + box.w / 2) / width
        cy = (box.y + box.h / 2) / height
        lines.append(
            f"{index[box.label]} {cx:.8f} {cy:.8f} {box.w / width:.8f} {box.h / height:.8f}"
        )
    return "".join(line + "\n" for line in lines)
