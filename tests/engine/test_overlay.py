"""Overlay rendering: colour scale, blend and boxes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from app.boxes import Box
from app.engine.overlay import colorize, render_overlay


def test_colorize_scale() -> None:
    values = torch.tensor([[0.0, 0.5, 1.0]], dtype=torch.float64)
    out = colorize(values)
    assert out[0, 0].tolist() == [68, 1, 84] and out[0, 2].tolist() == [253, 231, 37]
    assert out[0, 1].tolist() == [33, 144, 141]
    assert (colorize(np.full((2, 3), 7.0)) == [68, 1, 84]).all()
    with pytest.raises(ValueError, match="H×W"):
        colorize(np.zeros(3))


def test_render_overlay_blends_and_draws_boxes() -> None:
    image = Image.new("RGB", (9, 6), (100, 100, 100))
    heat = np.zeros((6, 9))
    heat[0, 0] = 1.0
    out = np.asarray(render_overlay(image, heat, [Box(4, 2, 4, 3)], [""], alpha=0.5))
    assert out[0, 0].tolist() == [176, 166, 68]  # (100 + 253) / 2 …, rounded
    assert out[5, 8].tolist() == [84, 50, 92]
    # No colour given: the page's grey for a label it does not know.
    assert out[2, 4].tolist() == [127, 127, 127] and out[3, 5].tolist() == [84, 50, 92]
    with pytest.raises(ValueError, match="image size"):
        render_overlay(image, np.zeros((5, 9)))
    with pytest.raises(ValueError, match="alpha"):
        render_overlay(image, heat, alpha=2.0)


def test_boxes_take_their_labels_palette_colours() -> None:
    from app.palette import label_colours

    image = Image.new("RGB", (61, 47), (100, 100, 100))
    boxes = [Box(3, 4, 20, 15), Box(30, 20, 25, 22), Box(5, 25, 10, 10)]
    labels = ["zebra", "ant", "zebra"]
    palette = label_colours(labels)  # ant → rank 0, zebra → rank 1
    colours = [palette[label] for label in labels]
    out = np.asarray(render_overlay(image, np.zeros((47, 61)), boxes, ["", "", ""], 0.5, colours))
    for box, label in zip(boxes, labels, strict=True):
        want = [int(palette[label][i : i + 2], 16) for i in (1, 3, 5)]
        for x, y in [(box.x, box.y + 3), (box.x + box.w - 1, box.y + 5), (box.x + 4, box.y)]:
            assert out[int(y), int(x)].tolist() == want, (label, x, y)
    assert out[4, 3].tolist() == [255, 127, 14]  # "#ff7f0e", zebra's, by hand
    with pytest.raises(ValueError, match="#rrggbb"):
        render_overlay(image, np.zeros((47, 61)), boxes[:1], colours=["red"])


def test_a_caption_sits_on_its_box_colour_in_readable_ink() -> None:
    image = Image.new("RGB", (80, 60), (100, 100, 100))
    for colour, ink in (("#000075", (255, 255, 255)), ("#dcd300", (0, 0, 0))):
        out = np.asarray(
            render_overlay(image, np.zeros((60, 80)), [Box(10, 30, 50, 20)], ["ab"], 0.0, [colour])
        ).astype(np.int64)
        above = out[:30].reshape(-1, 3)  # the caption's tag sits above the box
        fill = np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)])
        assert (above == fill).all(axis=1).sum() > 50  # the tag, in the box's colour
        # The text (antialiased): its strongest pixel is the ink, not the box colour.
        strongest = above[np.abs(above - fill).sum(axis=1).argmax()]
        assert np.abs(strongest - np.array(ink)).max() <= 16, (colour, strongest)


def _tag(out: np.ndarray, box: Box, colour: str, width: int) -> tuple[int, int, int, int]:
    """The caption tag of ``box`` read off the picture: the bounding box (left, top, right,
    bottom, exclusive) of the pixels in its colour once its outline is set aside."""
    mask = (out == [int(colour[i : i + 2], 16) for i in (1, 3, 5)]).all(axis=2)
    x0, y0, x1, y1 = int(box.x), int(box.y), int(box.x + box.w), int(box.y + box.h)
    ring = np.zeros_like(mask)
    ring[y0:y1, x0:x1] = True
    ring[y0 + width : y1 - width, x0 + width : x1 - width] = False
    ys, xs = np.nonzero(mask & ~ring)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


@pytest.mark.parametrize(
    "boxes",
    [
        # Side by side, closer than a caption is wide (a face, an eye, an ear): the tags
        # stack above and below instead of covering the ones before.
        [Box(10, 40, 30, 30), Box(45, 40, 30, 30), Box(80, 40, 30, 30), Box(52, 47, 12, 9)],
        # Against the top edge: no room above, so inside the box, and the neighbour's
        # caption goes elsewhere.
        [Box(150, 0, 45, 40), Box(120, 3, 40, 50)],
        # A crowd: three rows of four small boxes, their captions twice as wide.
        [Box(7 + 52 * c, 5 + 30 * r, 40, 22) for r in range(3) for c in range(4)],
    ],
)
def test_captions_of_nearby_boxes_never_hide_each_other(boxes: list[Box]) -> None:
    from PIL import ImageDraw, ImageFont

    image = Image.new("RGB", (217, 163), (100, 100, 100))
    colours = [f"#{40 + 15 * i:02x}{200 - 11 * i:02x}{(90 * i) % 256:02x}" for i in range(12)]
    captions = [f"label {i}  energy 0.{i}23" for i in range(len(boxes))]
    out = np.asarray(
        render_overlay(image, np.zeros((163, 217)), boxes, captions, 0.0, colours[: len(boxes)])
    )
    width = 1  # round(min(217, 163) / 150)
    draw, font = ImageDraw.Draw(image), ImageFont.load_default()
    tags = []
    for box, caption, colour in zip(boxes, captions, colours, strict=False):
        left, top, right, bottom = _tag(out, box, colour, width)
        tl, tt, tr, tb = draw.textbbox((0, 0), caption, font=font)
        # The whole tag is there, at its full size: no later tag covers any of it.
        assert (right - left, bottom - top) == (tr - tl + 4, tb - tt + 4), (box, caption)
        assert 0 <= left and right <= 217 and 0 <= top and bottom <= 163
        # Near its box: touching it, inside it or a few rows off.
        assert left < box.x + box.w and right > box.x, (box, left, right)
        assert top < box.y + box.h + 3 * (tb - tt + 4) and bottom > box.y - 4 * (tb - tt + 4)
        tags.append((left, top, right, bottom))
    for i, a in enumerate(tags):
        for b in tags[i + 1 :]:
            assert min(a[2], b[2]) <= max(a[0], b[0]) or min(a[3], b[3]) <= max(a[1], b[1]), (a, b)
    if boxes[0].y == 0:  # no room above: the caption sits inside its box, under the edge
        assert tags[0][1] == width and tags[0][3] <= boxes[0].h
