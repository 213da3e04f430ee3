"""Label colours: distinct while the palette lasts, the same label set gives the same colours."""

from __future__ import annotations

import re

import pytest

from app.palette import PALETTE, PALETTE_SIZE, colour_at, label_colours


def _rgb(colour: str) -> tuple[int, int, int]:
    return (int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16))


def test_labels_get_their_rank_colour_whatever_the_order_and_repeats() -> None:
    colours = label_colours(["zebra", "ant", "zebra", "cat"])
    assert colours == {"ant": PALETTE[0], "cat": PALETTE[1], "zebra": PALETTE[2]}
    assert label_colours(["cat", "ant", "zebra"]) == colours


def test_colours_stay_distinct_well_past_the_palette() -> None:
    n = 3 * PALETTE_SIZE
    colours = [colour_at(rank) for rank in range(n)]
    assert all(re.fullmatch(r"#[0-9a-f]{6}", c) for c in colours)
    assert len(set(colours)) == n
    # Every pair within the first palette differs clearly (RGB distance ≥ 60).
    first = [_rgb(c) for c in colours[:PALETTE_SIZE]]
    closest = min(
        sum((a - b) ** 2 for a, b in zip(p, q, strict=True))
        for i, p in enumerate(first)
        for q in first[i + 1 :]
    )
    assert closest >= 60**2
    # The second round is the first one mixed 25% towards black.
    assert _rgb(colours[PALETTE_SIZE]) == tuple(round(c * 0.75) for c in _rgb(PALETTE[0]))


def test_a_negative_rank_is_refused() -> None:
    with pytest.raises(ValueError, match="0 or more"):
        colour_at(-1)
