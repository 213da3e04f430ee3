"""The YOLO codec alone: normalised centres by hand, class lists, refusals."""

from __future__ import annotations

import pytest

from app.formats.records import LabeledBox
from app.formats.yolo import parse_classes, parse_yolo, write_yolo


def test_parse_by_hand_on_an_awkward_size() -> None:
    text = "1 0.5 0.5 0.5 0.5\n\n  0 0.125 0.25 0.25 0.5  \n"
    boxes = parse_yolo(text, ["cat", "dog"], 37, 23)
    assert boxes[0] == LabeledBox(0.25 * 37, 0.25 * 23, 0.5 * 37, 0.5 * 23, "dog")
    assert boxes[1] == LabeledBox(0.0, 0.0, 0.25 * 37, 0.5 * 23, "cat")


def test_classes_by_line_or_comma_cleaned() -> None:
    assert parse_classes("cat, dog ,") == ["cat", "dog"]
    assert parse_classes("a,b\ncafe\u0301\n\n") == ["a,b", "caf\u00e9"]
    with pytest.raises(ValueError, match="class names"):
        parse_classes(" , ")
    with pytest.raises(ValueError, match="U\\+200B"):
        parse_classes("a\u200bb,c")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0 0.5 0.5 0.1", "line 1"),
        ("0 0.5 0.5 0.1 0.1 0.9", "line 1"),
        ("0 0.5 0.5 0.1 0.1\nx 1 1 1 1", "line 2"),
        ("0.0 0.5 0.5 0.1 0.1", "integer class"),
        ("0 nan 0.5 0.1 0.1", "finite numbers"),
        ("0 0.5 inf 0.1 0.1", "finite numbers"),
        ("0 0.5 0.5 1e999 0.1", "finite numbers"),
        ("2 0.5 0.5 0.1 0.1", "only 2 class names"),
        ("-1 0.5 0.5 0.1 0.1", "class -1"),
    ],
)
def test_bad_lines_are_refused_with_their_number(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_yolo(text, ["a", "b"], 40, 20)


def test_write_then_parse_round_trips() -> None:
    boxes = [(4, LabeledBox(3.3, 1.7, 11.1, 7.9, "dog")), (9, LabeledBox(0, 0, 37, 23, "cat"))]
    text = write_yolo(37, 23, boxes, ["cat", "dog"])
    assert text.splitlines()[1] == "0 0.50000000 0.50000000 1.00000000 1.00000000"
    back = parse_yolo(text, ["cat", "dog"], 37, 23)
    for (_, want), got in zip(boxes, back, strict=True):
        assert got.label == want.label
        assert got.as_tuple()[:4] == pytest.approx(want.as_tuple()[:4], abs=1e-6)
    with pytest.raises(ValueError, match="box 4 has label 'dog'"):
        write_yolo(37, 23, boxes, ["cat"])
