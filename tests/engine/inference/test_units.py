"""Units and strata: which rows move together."""

from __future__ import annotations

import pytest

from app.engine.inference import Design, choose_unit, scheme


def test_one_box_per_image_in_one_group_is_box_level() -> None:
    d = Design.from_boxes([(1, "a", 3), (2, "b", 3)], [(3, "c", 3)])
    assert choose_unit(d) == "box"
    s = scheme(d)
    assert s.n_units == (2, 1)
    assert len(s.strata) == 1 and s.strata[0].k == 2
    assert s.row_element.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]


def test_two_boxes_of_one_image_in_one_group_make_images_the_unit() -> None:
    d = Design.from_boxes([(1, "a", 2), (2, "a", 2)], [(3, "b", 2)])
    assert choose_unit(d) == "image"
    s = scheme(d)
    assert s.row_element.tolist() == [0, 0, 0, 0, 1, 1]
    assert s.n_units == (1, 1)
    assert choose_unit(d, "box") == "box"
    assert scheme(d, "box").row_element.tolist() == [0, 0, 1, 1, 2, 2]


def test_an_image_in_both_groups_is_a_stratum_of_its_boxes() -> None:
    d = Design.from_boxes(
        [(1, "s", 1), (2, "s", 1), (3, "a", 1), (4, "a", 1)],
        [(5, "s", 1), (6, "b", 1), (7, "c", 1)],
    )
    s = scheme(d)
    assert s.unit == "image"
    free = [t for t in s.strata if t.image is None]
    shared = [t for t in s.strata if t.image == "s"]
    assert len(free) == 1 and len(shared) == 1
    assert len(free[0].elements) == 3 and free[0].k == 1  # a (2 boxes) vs b, c
    assert len(shared[0].elements) == 3 and shared[0].k == 2  # boxes 1, 2 vs 5
    assert s.row_element[2] == s.row_element[3]  # boxes of image a move together


def test_bad_designs_are_refused_with_a_fix() -> None:
    with pytest.raises(ValueError, match="both groups"):
        Design.from_boxes([(1, "a", 1)], [(1, "a", 1)])
    with pytest.raises(ValueError, match="two images"):
        Design((1, 1), ("a", "b"), (2,), ("c",))
    with pytest.raises(ValueError, match="unknown unit"):
        choose_unit(Design.independent(2, 2), "row")  # type: ignore[arg-type]
