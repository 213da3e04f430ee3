"""Pascal VOC XML: one image's boxes in, one image's boxes out.

VOC uses 1-based inclusive pixel indices (the VOC devkit's convention):
``x = xmin − 1, w = xmax − xmin + 1``; writing rounds to whole pixels. DTDs and entities
are refused (defusedxml), and what is written is well-formed XML 1.0 whatever the labels
and file name hold.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException

from app.formats.labels import clean_label
from app.formats.records import LabeledBox

__all__ = ["parse_voc", "voc_file_name", "write_voc"]

# Characters XML 1.0 cannot hold at all, not even as references.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _root(text: bytes) -> ET.Element:
    try:
        root: ET.Element = SafeET.fromstring(text, forbid_dtd=True)
    except (ET.ParseError, DefusedXmlException, ValueError) as exc:
        raise ValueError(
            f"not a Pascal VOC XML file ({exc}); DTDs and entities are refused"
        ) from None
    if root.tag != "annotation":
        raise ValueError(f"a Pascal VOC file's root element is <annotation>, not <{root.tag}>")
    return root


def voc_file_name(text: bytes) -> str | None:
    """The ``<filename>`` of a VOC annotation (its last path part), or None when it has none.

    Raises:
        ValueError: not VOC XML (see :func:`parse_voc`).
    """
    name = (_root(text).findtext("filename") or "").strip().replace("\\", "/")
    return name.rsplit("/", 1)[-1] or None


def parse_voc(
    text: bytes, width: int, height: int, skipped: list[str] | None = None
) -> list[LabeledBox]:
    """Boxes from a Pascal VOC annotation for a ``width × height`` image.

    Args:
        text: the XML file's bytes.
        width: the image's width as displayed.
        height: the image's height as displayed.
        skipped: when given, an ``<object>`` that fails its checks is left out and its
            reason appended here instead of refusing the file.

    Raises:
        ValueError: not VOC XML, entities or DTDs (refused), a size that is not the image's,
            an ``<object>`` without ``<name>`` or ``<bndbox>``, a coordinate that is not a
            finite number, or a name that is not a clean label.
    """
    root = _root(text)
    size = root.find("size")
    if size is not None:
        given = (_int_of(size, "width"), _int_of(size, "height"))
        if given != (width, height) and all(given):
            raise ValueError(
                f"the VOC file is for a {given[0]}×{given[1]} image; this image "
                f"is {width}×{height} as displayed"
            )
    boxes: list[LabeledBox] = []
    for number, obj in enumerate(root.iter("object"), start=1):
        try:
            boxes.append(_object(obj, number))
        except ValueError as exc:
            if skipped is None:
                raise
            skipped.append(f"VOC object {number}: {exc}")
    return boxes


def _object(obj: ET.Element, number: int) -> LabeledBox:
    name = obj.findtext("name")
    bndbox = obj.find("bndbox")
    if name is None or not name.strip() or bndbox is None:
        raise ValueError("every VOC <object> needs a <name> and a <bndbox>")
    label = clean_label(name, f"the <name> of VOC object {number}")
    xmin, ymin = _float_of(bndbox, "xmin"), _float_of(bndbox, "ymin")
    xmax, ymax = _float_of(bndbox, "xmax"), _float_of(bndbox, "ymax")
    return LabeledBox(xmin - 1, ymin - 1, xmax - xmin + 1, ymax - ymin + 1, label)


def _float_of(element: ET.Element, tag: str) -> float:
    text = element.findtext(tag)
    try:
        value = float(text) if text is not None else math.nan
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise ValueError(f"VOC <{tag}> must be a finite number, got {(text or '')[:40]!r}")
    return value


def _int_of(element: ET.Element, tag: str) -> int:
    return int(round(_float_of(element, tag)))


def _xml_text(text: str) -> str:
    return _NOT_XML.sub("\ufffd", text)


def write_voc(file_name: str, width: int, height: int, boxes: Sequence[LabeledBox]) -> str:
    """The boxes of one image as a Pascal VOC annotation (1-based inclusive pixel indices).

    ElementTree escapes ``<``, ``&`` and quotes; characters that XML 1.0 cannot hold at all
    (C0 controls other than tab and newlines, lone surrogates, U+FFFE/U+FFFF) become U+FFFD.
    """
    root = ET.Element("annotation")
    ET.SubElement(root, "filename").text = _xml_text(file_name)
    size = ET.SubElement(root, "size")
    for tag, value in (("width", width), ("height", height), ("depth", 3)):
        ET.SubElement(size, tag).text = str(value)
    for box in boxes:
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = _xml_text(box.label)
        ET.SubElement(obj, "difficult").text = "0"
        bndbox = ET.SubElement(obj, "bndbox")
        xmin, ymin = round(box.x) + 1, round(box.y) + 1
        xmax, ymax = round(box.x + box.w), round(box.y + box.h)
        for tag, value in (
            ("xmin", xmin),
            ("ymin", ymin),
            ("xmax", max(xmax, xmin)),
            ("ymax", max(ymax, ymin)),
        ):
            ET.SubElement(bndbox, tag).text = str(value)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"
