"""The COCO codec alone: records out of checked documents, every malformed level refused."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from app.formats.coco import CocoImage, decode_coco, parse_coco, write_coco
from app.formats.records import LabeledBox


def _document(**changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "images": [
            {"id": 7, "file_name": "dir\\sub/a.png", "width": 40, "height": 30},
            {"id": "b-1", "file_name": "b.jpg"},
        ],
        "categories": [{"id": 3, "name": " cafe\u0301 "}, {"id": 4, "name": "dog"}],
        "annotations": [
            {"id": 11, "image_id": 7, "category_id": 3, "bbox": [1, 2.5, 3, 4]},
            {"image_id": "b-1", "category_id": 4, "bbox": [0, 0, 1e3, 7]},
        ],
    }
    document.update(changes)
    return document


def test_parse_reads_ids_names_sizes_and_boxes() -> None:
    parsed = parse_coco(_document())
    assert parsed.images == [
        CocoImage(7, "a.png", 40, 30, "dir/sub/a.png"),
        CocoImage("b-1", "b.jpg", path="b.jpg"),
    ]
    assert [image.path for image in parsed.images] == ["dir/sub/a.png", "b.jpg"]
    assert parsed.categories == {3: "caf\u00e9", 4: "dog"}
    first, second = parsed.annotations
    assert (first.id, first.image_id, first.box) == (11, 7, LabeledBox(1, 2.5, 3, 4, "café"))
    assert (second.id, second.image_id, second.box) == (
        None,
        "b-1",
        LabeledBox(0, 0, 1000, 7, "dog"),
    )
    assert decode_coco(json.dumps(_document()).encode()) == parsed


def _annotation(**changes: Any) -> dict[str, Any]:
    annotation: dict[str, Any] = {"id": 1, "image_id": 7, "category_id": 3, "bbox": [1, 2, 3, 4]}
    annotation.update(changes)
    return {k: v for k, v in annotation.items() if v is not ...}


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([], "JSON object"),
        ({"images": [], "annotations": []}, "'categories'"),
        (_document(images={"id": 1}), "list 'images'"),
        (_document(categories=[{"id": [1], "name": "a"}]), "category 0's 'id' must be an integer"),
        (_document(categories=[{"id": {"a": 1}, "name": "a"}]), "got dict"),
        (_document(categories=[{"id": True, "name": "a"}]), "got bool"),
        (_document(categories=[{"id": 1.0, "name": "a"}]), "got float"),
        (_document(categories=[{"id": 2**63, "name": "a"}]), "from 0 to"),
        (_document(categories=[{"id": -1, "name": "a"}]), "from 0 to"),
        (_document(categories=[{"id": "", "name": "a"}]), "1 to 255 characters"),
        (_document(categories=[{"id": 1}]), "string 'name'"),
        (_document(categories=[{"id": 1, "name": 5}]), "name' must be a string"),
        (_document(categories=[{"id": 1, "name": "a\x00b"}]), "U+0000"),
        (_document(categories=[{"id": 1, "name": "a"}, {"id": 1, "name": "b"}]), "used twice"),
        (_document(categories=["cat"]), "category 0"),
        (_document(images=[{"file_name": "a.png"}]), "image 0: every COCO image needs an 'id'"),
        (_document(images=[{"id": 1, "file_name": ["a"]}]), "string 'file_name'"),
        (
            _document(images=[{"id": 1, "file_name": "a", "width": "40", "height": 3}]),
            "'width' must be a number",
        ),
        (
            _document(images=[{"id": 1, "file_name": "a", "width": 0, "height": 3}]),
            "positive whole number",
        ),
        (
            _document(images=[{"id": 1, "file_name": "a", "width": 4.5, "height": 3}]),
            "positive whole number",
        ),
        (
            _document(images=[{"id": 1, "file_name": "a"}, {"id": 1, "file_name": "b"}]),
            "used twice",
        ),
        (_document(annotations=[7]), "annotation 0 is not an object"),
        (_document(annotations=[_annotation(bbox=...)]), "needs 'bbox'"),
        (_document(annotations=[_annotation(image_id=...)]), "needs 'image_id'"),
        (_document(annotations=[_annotation(bbox=[1, 2])]), "[x, y, w, h]"),
        (_document(annotations=[_annotation(bbox="1,2,3,4")]), "[x, y, w, h]"),
        (_document(annotations=[_annotation(bbox=[1, 2, "3", 4])]), "must be a number"),
        (_document(annotations=[_annotation(bbox=[1, 2, True, 4])]), "got bool"),
        (_document(annotations=[_annotation(bbox=[1, 2, None, 4])]), "got NoneType"),
        (_document(annotations=[_annotation(bbox=[10**400, 2, 3, 4])]), "finite number"),
        (_document(annotations=[_annotation(bbox=[math.nan, 2, 3, 4])]), "finite number"),
        (_document(annotations=[_annotation(bbox=[1, math.inf, 3, 4])]), "finite number"),
        (_document(annotations=[_annotation(category_id=9)]), "category_id 9"),
        (_document(annotations=[_annotation(category_id=[3])]), "'category_id' must be"),
        (_document(annotations=[_annotation(image_id={"x": 1})]), "'image_id' must be"),
        (_document(annotations=[_annotation(id=1.5)]), "'id' must be an integer"),
    ],
)
def test_malformed_documents_are_refused_with_a_message(document: Any, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_coco(document)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"{not json", "not JSON"),
        (b"\xff\xfe{}", "not JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "not JSON"),
        (
            b'{"images": [], "categories": [], "annotations": [], "n": ' + b"1" * 5000 + b"}",
            "not JSON",
        ),
        (
            b'{"images": [], "categories": [{"id": 1, "name": "a"}], "annotations": '
            b'[{"image_id": 1, "category_id": 1, "bbox": [1, 2, 3, ' + b"9" * 400 + b"]}]}",
            "finite number",
        ),
        (
            b'{"images": [], "categories": [{"id": 1, "name": "a"}], "annotations": '
            b'[{"image_id": 1, "category_id": 1, "bbox": [1, 2, 3, NaN]}]}',
            "finite number",
        ),
    ],
)
def test_decode_refuses_what_json_cannot_or_should_not_read(raw: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        decode_coco(raw)


def test_write_then_parse_round_trips() -> None:
    images = [CocoImage(5, "a.png", 61, 47), CocoImage(9, "b.png", 30, 30)]
    boxes = [
        (1, 5, LabeledBox(1.5, 2, 10, 20.25, "scene")),
        (4, 9, LabeledBox(3, 4, 5, 6, "a <cat> & 'x'")),
        (2, 5, LabeledBox(0, 0, 61, 47, "a <cat> & 'x'")),
    ]
    document = write_coco(images, boxes)
    assert document["categories"] == [
        {"id": 1, "name": "a <cat> & 'x'", "supercategory": ""},
        {"id": 2, "name": "scene", "supercategory": ""},
    ]
    assert document["annotations"][0] == {
        "id": 1,
        "image_id": 5,
        "category_id": 2,
        "bbox": [1.5, 2, 10, 20.25],
        "area": 202.5,
        "iscrowd": 0,
    }
    parsed = decode_coco(json.dumps(document).encode())
    assert parsed.images == images
    assert [(a.id, a.image_id, a.box) for a in parsed.annotations] == boxes


def test_lenient_parse_leaves_out_bad_entries_with_their_reasons() -> None:
    document = _document()
    document["images"].append({"id": 7, "file_name": "again.png"})
    document["images"].append({"id": 8})
    document["annotations"].append({"id": 12, "image_id": 7, "category_id": 99, "bbox": [0] * 4})
    document["annotations"].append({"id": 13, "image_id": 7, "category_id": 3, "bbox": [0, 0]})
    with pytest.raises(ValueError, match="used twice"):
        parse_coco(document)
    skipped: list[str] = []
    parsed = parse_coco(document, skipped)
    assert [image.id for image in parsed.images] == [7, "b-1"]
    assert [a.id for a in parsed.annotations] == [11, None]
    assert skipped == [
        "the COCO image id 7 is used twice in 'images'",
        "COCO image 3: every COCO image needs an 'id' and a string 'file_name'",
        "COCO annotation 2 has category_id 99, not in 'categories'",
        "COCO annotation 3 needs 'bbox': [x, y, w, h] numbers",
    ]
