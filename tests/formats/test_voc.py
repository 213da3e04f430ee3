"""The Pascal VOC codec alone: 1-based inclusive pixels, refusals, well-formed output."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from app.formats.records import LabeledBox
from app.formats.voc import parse_voc, write_voc

VOC = b"""<annotation><size><width>40</width><height>30</height></size>
<object><name> cafe\xcc\x81 </name><bndbox><xmin>1</xmin><ymin>2</ymin><xmax>10</xmax>
<ymax>5.5</ymax></bndbox></object></annotation>"""


def test_parse_by_hand() -> None:
    assert parse_voc(VOC, 40, 30) == [LabeledBox(0, 1, 10, 4.5, "caf\u00e9")]


@pytest.mark.parametrize(
    ("xml", "message"),
    [
        (b"""<!DOCTYPE a [<!ENTITY e "x">]><annotation/>""", "refused"),
        (b"<annotation", "not a Pascal VOC"),
        (b"<other/>", "<annotation>"),
        (VOC.replace(b"<width>40", b"<width>41"), "41\u00d730"),
        (VOC.replace(b"<xmin>1<", b"<xmin>nan<"), "<xmin> must be a finite number"),
        (VOC.replace(b"<xmin>1<", b"<xmin>" + b"9" * 400 + b"<"), "<xmin> must be a finite"),
        (VOC.replace(b"<ymax>5.5<", b"<ymax>1e999<"), "<ymax> must be a finite"),
        (VOC.replace(b"<xmax>10</xmax>", b""), "<xmax>"),
        (VOC.replace(b"<width>40", b"<width>inf"), "<width>"),
        (VOC.replace(b" cafe\xcc\x81 ", b"a&#x200b;b"), "U\\+200B"),
        (VOC.replace(b" cafe\xcc\x81 ", b"a&#x1b;b"), "not a Pascal VOC"),
        (VOC.replace(b" cafe\xcc\x81 ", b"x" * 201), "at most 200"),
        (VOC.replace(b"<name> cafe\xcc\x81 </name>", b""), "<name>"),
    ],
)
def test_bad_files_are_refused_with_a_message(xml: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_voc(xml, 40, 30)


NASTY = [
    "a <b> & c",
    "\"quoted\" 'single'",
    "]]> end",
    "caf\u00e9 \U0001f408 \u4e2d",
    "&amp; literal",
    "x" * 200,
]


def test_written_xml_is_well_formed_and_reads_back_to_the_same_boxes() -> None:
    boxes = [LabeledBox(float(i), 2.0, 5.0 + i, 3.0, label) for i, label in enumerate(NASTY)]
    text = write_voc("we\x01ird <name>.png", 40, 30, boxes)
    root = ET.fromstring(text.encode())  # well-formed: the stdlib parser takes it
    assert root.findtext("filename") == "we\ufffdird <name>.png"
    assert [o.findtext("name") for o in root.iter("object")] == NASTY
    assert parse_voc(text.encode(), 40, 30) == boxes


def test_written_coordinates_are_whole_one_based_pixels() -> None:
    text = write_voc("a.png", 40, 30, [LabeledBox(1.4, 0, 0.2, 29.6, "a")])
    box = ET.fromstring(text).find("object/bndbox")
    assert box is not None
    assert [box.findtext(t) for t in ("xmin", "ymin", "xmax", "ymax")] == ["2", "1", "2", "30"]
