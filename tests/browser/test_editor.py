"""The box editor's view and habits: wheel zoom at the cursor, space/middle-drag pan, Fit and
1:1, handles on small boxes, the label bar with its hotkeys and counts, and undo/redo that
survives reopening the image. Every page is checked for console errors by its fixture."""

from __future__ import annotations

import io
import math
import time
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.browser.helpers import open_dashboard, open_image, post_box, wait_for

Page = Any
_wait_for = partial(wait_for, timeout=30.0)  # this file's default wait
Boxes = list[dict[str, Any]]


def _png(width: int, height: int, seed: int) -> bytes:
    """A smooth picture of this size, distinct per seed (so no other test shares it)."""
    y, x = np.indices((height, width), dtype=np.float64)
    pixels = np.stack(
        [x * 255 / width, y * 255 / height, np.full_like(x, seed % 256)], axis=-1
    ).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


NewImage = Callable[[str, int, int, int], dict[str, Any]]


@pytest.fixture
def new_image(server: str) -> Iterator[NewImage]:
    """``new_image(name, width, height, seed)`` stores a picture; the test's images (and so
    their boxes and labels) are deleted afterwards, leaving the shared server as it was.
    Ask for it before ``watched_page``: it is then torn down after the page has closed."""
    made: list[int] = []

    def make(name: str, width: int, height: int, seed: int) -> dict[str, Any]:
        png = _png(width, height, seed)
        response = httpx.post(f"{server}/api/images", files={"file": (name, png, "image/png")})
        assert response.status_code in (200, 201), response.text
        image: dict[str, Any] = response.json()
        assert (image["width"], image["height"]) == (width, height)
        made.append(image["id"])
        return image

    yield make
    for image_id in made:
        httpx.delete(f"{server}/api/images/{image_id}")


def _boxes(origin: str, image_id: int) -> Boxes:
    boxes: Boxes = httpx.get(f"{origin}/api/images/{image_id}/boxes").json()
    return boxes


def _wait_boxes(origin: str, image_id: int, ok: Callable[[Boxes], bool]) -> Boxes:
    deadline = time.monotonic() + 30  # a box saves in ms; 30 s only on a failure
    while True:
        boxes = _boxes(origin, image_id)
        if ok(boxes):
            return boxes
        assert time.monotonic() < deadline, f"the store never reached the state; it has {boxes}"
        time.sleep(0.1)


def _round(value: float) -> int:
    """JavaScript's Math.round (halves up), which the editor rounds box corners with."""
    return math.floor(value + 0.5)


def _geometry(boxes: Boxes) -> list[tuple[Any, ...]]:
    return sorted((b["label"], b["x"], b["y"], b["w"], b["h"]) for b in boxes)


class View:
    """Where the image is on screen now: image pixels ↔ viewport pixels."""

    def __init__(self, page: Page, image: dict[str, Any]) -> None:
        rect = page.locator(".editor-overlay").bounding_box()
        self.left, self.top = rect["x"], rect["y"]
        self.scale = rect["width"] / image["width"]
        assert rect["height"] / image["height"] == pytest.approx(self.scale, rel=1e-3)

    def screen(self, x: float, y: float) -> tuple[float, float]:
        return self.left + x * self.scale, self.top + y * self.scale

    def image(self, sx: float, sy: float) -> tuple[float, float]:
        return (sx - self.left) / self.scale, (sy - self.top) / self.scale


def _drag(
    page: Page, start: tuple[float, float], end: tuple[float, float], button: str = "left"
) -> None:
    page.mouse.move(*start)
    page.mouse.down(button=button)
    page.mouse.move(*end, steps=8)
    page.mouse.up(button=button)


def _stage(page: Page) -> dict[str, float]:
    rect: dict[str, float] = page.locator("#editor-stage").bounding_box()
    return rect


def test_wheel_zoom_keeps_the_point_under_the_cursor_and_space_or_middle_drag_pans(
    new_image: NewImage, watched_page: tuple[Page, Any], server: str, shot: Any
) -> None:
    page, _ = watched_page
    image = new_image("zoom.png", 641, 427, 11)
    open_dashboard(page, server)
    open_image(page, image["filename"])
    fit = View(page, image)
    assert page.input_value("#zoom") == "fit"
    assert page.inner_text("#zoom-level") == f"= {round(fit.scale * 1000) / 10:g}%"

    # Wheel in and out at an off-centre point: the image point under the cursor stays put.
    # Mouse events carry whole CSS pixels: the cursor is where the page will see it.
    cursor = tuple(round(c) for c in fit.screen(171.3, 302.9))
    point = fit.image(*cursor)
    page.mouse.move(*cursor)
    scales = [fit.scale]
    for delta in (-240, -240, -120, 360, -480):
        page.mouse.wheel(0, delta)
        _wait_for(
            page,
            f"Math.abs(document.querySelector('.editor-overlay')"
            f".getBoundingClientRect().width / {image['width']} - {scales[-1]}) > 1e-6",
        )
        view = View(page, image)
        scales.append(view.scale)
        moved = np.subtract(view.screen(*point), cursor)
        assert np.abs(moved).max() <= 1.0, (delta, moved)
    assert scales[1] > scales[0] and scales[3] > scales[2] and scales[4] < scales[3], scales
    assert scales[-1] > 2 * fit.scale
    assert page.input_value("#zoom") == "custom"
    shown = float(page.text_content("#zoom-custom").rstrip("%"))
    assert shown == pytest.approx(100 * scales[-1], abs=0.06)
    shot(page, "zoomed")

    # Boxes drawn while zoomed are exact in image pixels.
    zoomed = View(page, image)
    page.fill("#box-label", "zoomed")
    _drag(
        page,
        zoomed.screen(point[0] - 30, point[1] - 20),
        zoomed.screen(point[0] + 25, point[1] + 7),
    )
    drawn = _wait_boxes(server, image["id"], lambda b: len(b) == 1)[0]
    x0, y0 = round(point[0] - 30), round(point[1] - 20)
    assert (drawn["x"], drawn["y"]) == (x0, y0)
    assert (drawn["w"], drawn["h"]) == (round(point[0] + 25) - x0, round(point[1] + 7) - y0)
    # The store has the box before the page has redrawn what follows an edit: the image's
    # gallery card (above the editor: a new height there moves window.scrollY through
    # scroll anchoring) and the label lists. Read the scroll position once both are done.
    _wait_for(
        page,
        f"document.querySelector(\".card[data-image-id='{image['id']}'] .meta\")"
        ".textContent.includes('1 box ')",
    )
    _wait_for(
        page,
        "[...document.getElementById('compare-labels').options]"
        ".some(o => o.value === 'zoomed' && o.textContent.includes('1 box on 1 image'))",
    )

    # Space held over the image: a left drag pans (no box, and the page does not scroll).
    scroll = page.evaluate("window.scrollY")
    start = zoomed.screen(*point)  # on the box just drawn: space+drag pans, never moves it
    page.mouse.move(*start)
    page.keyboard.down("Space")
    _drag(page, start, (start[0] - 97, start[1] - 61))
    page.keyboard.up("Space")
    panned = View(page, image)
    assert (panned.left - zoomed.left, panned.top - zoomed.top) == pytest.approx((-97, -61), abs=1)
    assert panned.scale == pytest.approx(zoomed.scale)
    assert page.evaluate("window.scrollY") == scroll
    # The middle button pans too, anywhere, even starting on a box.
    on_box = panned.screen(*point)
    _drag(page, on_box, (on_box[0] + 40, on_box[1] + 33), button="middle")
    middle = View(page, image)
    assert (middle.left - panned.left, middle.top - panned.top) == pytest.approx((40, 33), abs=1)
    page.wait_for_timeout(200)  # room for a stray create or move to land, were one sent
    assert _geometry(_boxes(server, image["id"])) == _geometry([drawn])
    shot(page, "panned")

    # 1:1 keeps the image point at the stage's centre where it was (no jump to the corner).
    stage = _stage(page)
    centre = (stage["x"] + stage["width"] / 2, stage["y"] + stage["height"] / 2)
    at_centre = middle.image(*centre)
    page.click("#zoom-one")
    one = View(page, image)
    assert one.scale == pytest.approx(1.0, abs=1e-6)
    assert np.abs(np.subtract(one.screen(*at_centre), centre)).max() <= 1.0
    assert page.input_value("#zoom") == "1"

    # Fit shows the whole image inside the stage again, at the scale it opened with.
    page.click("#zoom-fit")
    again = View(page, image)
    assert again.scale == pytest.approx(fit.scale, rel=1e-6)
    stage = _stage(page)
    assert again.left >= stage["x"] - 0.5 and again.top >= stage["y"] - 0.5
    assert again.left + image["width"] * again.scale <= stage["x"] + stage["width"] + 0.5
    assert again.top + image["height"] * again.scale <= stage["y"] + stage["height"] + 0.5
    assert page.input_value("#zoom") == "fit"


def test_boxes_drawn_at_any_zoom_on_a_high_dpi_screen_are_exact_in_image_pixels(
    new_image: NewImage, hidpi_page: tuple[Page, Any], server: str
) -> None:
    page, _ = hidpi_page
    assert page.evaluate("window.devicePixelRatio") == 1.5
    image = new_image("hidpi.png", 733, 509, 17)
    open_dashboard(page, server)
    open_image(page, image["filename"])
    page.fill("#box-label", "hidpi")
    corners = [(41.3, 37.8, 163.6, 120.2), (300.2, 200.7, 331.9, 251.4), (500.3, 90.1, 520.8, 99.6)]
    expected = []
    for index, (x0, y0, x1, y1) in enumerate(corners):
        view = View(page, image)
        page.mouse.move(*view.screen((x0 + x1) / 2, (y0 + y1) / 2))
        page.mouse.wheel(0, -170 - 90 * index)  # a different, awkward zoom for each box
        _wait_for(
            page,
            f"Math.abs(document.querySelector('.editor-overlay').getBoundingClientRect()"
            f".width / {image['width']} - {view.scale}) > 1e-6",
        )
        view = View(page, image)
        start, end = view.screen(x0, y0), view.screen(x1, y1)
        _drag(page, start, end)
        _wait_boxes(server, image["id"], lambda b, n=index + 1: len(b) == n)
        # What the page could see: the pointer's CSS position, back to image pixels.
        (ix0, iy0), (ix1, iy1) = view.image(*start), view.image(*end)
        x, y = _round(ix0), _round(iy0)
        expected.append(("hidpi", x, y, _round(ix1) - x, _round(iy1) - y))
    assert _geometry(_boxes(server, image["id"])) == sorted(expected)
    assert sorted(expected) == sorted(
        ("hidpi", _round(a), _round(b), _round(c) - _round(a), _round(d) - _round(b))
        for a, b, c, d in corners
    )


def _handle_sizes(page: Page) -> list[tuple[float, float]]:
    sizes: list[tuple[float, float]] = page.eval_on_selector_all(
        ".handle",
        "hs => hs.map(h => [h.getBoundingClientRect().width, h.getBoundingClientRect().height])",
    )
    return sizes


def _stroke_on_screen(page: Page, box_id: int, width: int) -> float:
    stroke: float = page.evaluate(
        """([id, width]) => {
        const rect = document.querySelector(`.box[data-id="${id}"] .box-rect`);
        const overlay = document.querySelector('.editor-overlay').getBoundingClientRect();
        return Number(rect.getAttribute('stroke-width')) * overlay.width / width;
    }""",
        [box_id, width],
    )
    return stroke


def test_a_40px_box_on_a_4800px_photo_stays_visible_and_grabbable_at_every_zoom(
    new_image: NewImage, watched_page: tuple[Page, Any], server: str, shot: Any
) -> None:
    page, _ = watched_page
    image = new_image("large.png", 4800, 3202, 12)
    box_id = post_box(server, image["id"], 2400, 1600, 40, 40, "speck")
    open_dashboard(page, server)
    open_image(page, image["filename"])
    view = View(page, image)
    assert view.scale < 0.25, "the test needs a photo much larger than the stage"
    centre = view.screen(2420, 1620)
    page.mouse.click(*centre)
    _wait_for(page, "document.getElementById('relabel').value === 'speck'")
    # The box shows on screen, its four corner handles sit outside it, each 10 px.
    assert 40 * view.scale >= 6
    assert _handle_sizes(page) == [pytest.approx([10, 10], abs=0.5)] * 4
    hit = page.evaluate(
        f"document.elementFromPoint({centre[0]}, {centre[1]}).getAttribute('class')"
    )
    assert hit == "box-rect"
    assert _stroke_on_screen(page, box_id, image["width"]) == pytest.approx(3, abs=0.01)
    shot(page, "small-box-at-fit")

    # Its body moves it; its south-east handle (outside the corner) resizes it.
    _drag(page, centre, (centre[0] + 20, centre[1] + 10))
    dx, dy = 20 / view.scale, 10 / view.scale
    within = 0.6 / view.scale  # pointer positions are exact to well under a screen pixel
    moved = _wait_boxes(server, image["id"], lambda b: b[0]["x"] != 2400)[0]
    assert (moved["x"], moved["y"]) == pytest.approx((2400 + dx, 1600 + dy), abs=within)
    assert (moved["w"], moved["h"]) == (40, 40)
    handle = page.locator(".handle-se").bounding_box()
    grip = (handle["x"] + handle["width"] / 2, handle["y"] + handle["height"] / 2)
    _drag(page, grip, (grip[0] + 15, grip[1] + 12))
    grown = _wait_boxes(server, image["id"], lambda b: b[0]["w"] != 40)[0]
    assert (grown["x"], grown["y"]) == (moved["x"], moved["y"])
    expected = (40 + 15 / view.scale, 40 + 12 / view.scale)
    assert (grown["w"], grown["h"]) == pytest.approx(expected, abs=within)

    # Zoomed in on it: the same handles and strokes on screen, now all eight of them.
    middle = view.screen(grown["x"] + grown["w"] / 2, grown["y"] + grown["h"] / 2)
    page.mouse.move(*middle)
    for _ in range(3):
        page.mouse.wheel(0, -400)
    wide = 4800 * 8 * view.scale
    _wait_for(
        page, f"document.querySelector('.editor-overlay').getBoundingClientRect().width > {wide}"
    )
    close = View(page, image)
    assert close.scale > 8 * view.scale
    assert _handle_sizes(page) == [pytest.approx([10, 10], abs=0.5)] * 8
    assert _stroke_on_screen(page, box_id, image["width"]) == pytest.approx(3, abs=0.01)
    shot(page, "small-box-zoomed")


def _chips(page: Page) -> list[dict[str, Any]]:
    chips: list[dict[str, Any]] = page.eval_on_selector_all(
        "#label-bar .label-chip",
        """cs => cs.map(c => ({
            label: c.dataset.label, key: c.querySelector('kbd').textContent,
            count: c.querySelector('.label-count').textContent,
            colour: getComputedStyle(c.querySelector('.swatch')).backgroundColor,
            active: c.getAttribute('aria-pressed') === 'true' }))""",
    )
    return chips


def _rgb(colour: str) -> str:
    r, g, b = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgb({r}, {g}, {b})"


def _labels(origin: str) -> list[dict[str, Any]]:
    labels: list[dict[str, Any]] = httpx.get(f"{origin}/api/labels").json()
    return labels


def test_label_bar_lists_colours_and_counts_and_hotkeys_pick_the_active_label(
    new_image: NewImage, watched_page: tuple[Page, Any], server: str, shot: Any
) -> None:
    page, _ = watched_page
    image = new_image("labels.png", 500, 380, 13)
    other = new_image("labels-other.png", 300, 200, 14)
    post_box(server, image["id"], 10, 10, 60, 50, "bar-apple")
    post_box(server, image["id"], 100, 10, 60, 50, "bar-apple")
    post_box(server, other["id"], 10, 10, 60, 50, "bar-apple")
    post_box(server, other["id"], 10, 100, 60, 50, "bar-pear")
    open_dashboard(page, server)
    open_image(page, image["filename"])
    rows = _labels(server)
    here = {"bar-apple": 2}
    chips = _chips(page)
    assert [c["label"] for c in chips[: len(rows)]] == [r["label"] for r in rows]
    for chip, row in zip(chips, rows, strict=False):
        assert chip["colour"] == _rgb(row["colour"]), chip
        assert chip["count"] == f"{here.get(row['label'], 0)} / {row['boxes']}"
    assert [c["key"] for c in chips[:9]] == [str(i) for i in range(1, min(9, len(chips)) + 1)]
    # Until a label is picked the active one is the default, listed last if no box has it.
    assert [c["label"] for c in chips if c["active"]] == ["object"]

    # The hotkey of "bar-pear" makes it active; a new box takes it and the counts follow.
    pear = next(i for i, r in enumerate(rows) if r["label"] == "bar-pear")
    assert pear < 9, "the test needs bar-pear among the first nine labels"
    page.locator("#viewer-title").click()  # focus off any field: keys go to the editor
    page.keyboard.press(str(pear + 1))
    assert page.input_value("#box-label") == "bar-pear"
    assert [c["label"] for c in _chips(page) if c["active"]] == ["bar-pear"]
    view = View(page, image)
    _drag(page, view.screen(200, 150), view.screen(300, 260))
    drawn = _wait_boxes(server, image["id"], lambda b: len(b) == 3)
    assert sorted(b["label"] for b in drawn) == ["bar-apple", "bar-apple", "bar-pear"]
    _wait_for(
        page,
        "document.querySelector('#label-bar [data-label=\"bar-pear\"] .label-count')"
        ".textContent === '1 / 2'",
    )
    pear_id = next(b["id"] for b in drawn if b["label"] == "bar-pear")
    stroke = page.get_attribute(f".box[data-id='{pear_id}'] .box-rect", "stroke")
    assert stroke == next(r["colour"] for r in _labels(server) if r["label"] == "bar-pear")

    # A click on a chip makes it active too; existing boxes keep their labels.
    page.click("#label-bar [data-label='bar-apple']")
    assert page.input_value("#box-label") == "bar-apple"
    _drag(page, view.screen(320, 200), view.screen(380, 300))
    drawn = _wait_boxes(server, image["id"], lambda b: len(b) == 4)
    assert sorted(b["label"] for b in drawn) == ["bar-apple"] * 3 + ["bar-pear"]
    _wait_for(
        page,
        "document.querySelector('#label-bar [data-label=\"bar-apple\"] .label-count')"
        ".textContent === '3 / 4'",
    )

    # A label typed for the first time is listed (grey until it has a box), then coloured
    # like the server colours it, on the chip and on the box outline.
    page.fill("#box-label", "bar-quince")
    chip = next(c for c in _chips(page) if c["label"] == "bar-quince")
    assert chip["active"] and chip["count"] == "0 / 0" and chip["colour"] == "rgb(127, 127, 127)"
    _drag(page, view.screen(20, 200), view.screen(90, 300))
    drawn = _wait_boxes(server, image["id"], lambda b: len(b) == 5)
    quince = next(r for r in _labels(server) if r["label"] == "bar-quince")
    _wait_for(
        page,
        "getComputedStyle(document.querySelector('#label-bar [data-label=\"bar-quince\"] .swatch'))"
        f".backgroundColor === '{_rgb(quince['colour'])}'",
    )
    quince_id = next(b["id"] for b in drawn if b["label"] == "bar-quince")
    _wait_for(
        page,
        f"document.querySelector(\".box[data-id='{quince_id}'] .box-rect\")"
        f".getAttribute('stroke') === '{quince['colour']}'",
    )
    shot(page, "label-bar")


def _key(page: Page, combo: str) -> None:
    page.locator("#viewer-title").click()  # keys reach the editor, not a text field
    page.keyboard.press(combo)


def test_undo_and_redo_of_every_edit_survive_reopening_the_image(
    new_image: NewImage, watched_page: tuple[Page, Any], server: str, shot: Any
) -> None:
    page, _ = watched_page
    image = new_image("history.png", 520, 400, 15)
    other = new_image("history-other.png", 320, 240, 16)
    open_dashboard(page, server)
    open_image(page, image["filename"])
    view = View(page, image)
    assert page.is_disabled("#undo") and page.is_disabled("#redo")

    states: list[list[tuple[Any, ...]]] = [[]]

    def settled(ok: Callable[[Boxes], bool]) -> Boxes:
        boxes = _wait_boxes(server, image["id"], ok)
        states.append(_geometry(boxes))
        return boxes

    page.fill("#box-label", "hist-a")
    _drag(page, view.screen(40, 50), view.screen(200, 170))  # create
    settled(lambda b: len(b) == 1)
    _drag(page, view.screen(100, 100), view.screen(130, 120))  # move by (30, 20)
    settled(lambda b: b[0]["x"] == 70)
    _drag(page, view.screen(230, 190), view.screen(260, 230))  # resize (south-east)
    settled(lambda b: b[0]["w"] == 190)
    page.fill("#relabel", "hist-b")
    page.press("#relabel", "Enter")  # relabel
    settled(lambda b: b[0]["label"] == "hist-b")
    page.fill("#box-label", "hist-c")
    _drag(page, view.screen(300, 250), view.screen(400, 330))  # a second box ...
    settled(lambda b: len(b) == 2)
    _key(page, "Delete")  # ... deleted
    settled(lambda b: len(b) == 1)
    assert states[-1] == [("hist-b", 70, 70, 190, 160)], states
    assert page.is_enabled("#undo") and page.is_disabled("#redo")

    # Another image, with an edit of its own, then back: the history is still there.
    page.click("#close-viewer")
    open_image(page, other["filename"])
    other_view = View(page, other)
    page.fill("#box-label", "hist-other")
    _drag(page, other_view.screen(20, 20), other_view.screen(120, 100))
    other_boxes = _wait_boxes(server, other["id"], lambda b: len(b) == 1)
    page.click("#close-viewer")
    open_image(page, image["filename"])
    assert page.is_enabled("#undo")

    # Undo walks back through every state, through the store; redo walks forward again.
    for state in reversed(states[:-1]):
        _key(page, "Control+z")
        _wait_boxes(server, image["id"], lambda b, s=state: _geometry(b) == s)
    assert page.is_disabled("#undo") and page.is_enabled("#redo")
    _key(page, "Control+z")  # nothing left: the other image's box stays
    page.wait_for_timeout(200)
    assert _boxes(server, image["id"]) == [] and _boxes(server, other["id"]) == other_boxes
    shot(page, "all-undone")
    for index, state in enumerate(states[1:]):
        _key(page, "Control+Shift+z" if index % 2 else "Control+y")
        _wait_boxes(server, image["id"], lambda b, s=state: _geometry(b) == s)
    assert page.is_disabled("#redo")

    # A page reload (same tab) keeps the steps: undo the delete and the second box returns.
    page.reload()
    page.wait_for_selector("body[data-ready='1']")
    open_image(page, image["filename"])
    _key(page, "Control+z")
    _wait_boxes(server, image["id"], lambda b: _geometry(b) == states[-2])
    assert page.locator(".box").count() == 2
    shot(page, "undone-after-reload")

    # Changed elsewhere (another tab, a script), the second box is not the one the next step
    # created: undo refuses to delete it, says why, and shows the box as the store has it.
    second = next(b for b in _boxes(server, image["id"]) if b["label"] == "hist-c")
    response = httpx.patch(f"{server}/api/boxes/{second['id']}", json={"x": 11})
    assert response.status_code == 200, response.text
    _key(page, "Control+z")
    page.wait_for_selector("#editor-error:has-text('changed elsewhere')")
    assert _geometry(_boxes(server, image["id"])) == sorted(
        [states[-1][0], ("hist-c", 11, *states[-2][1][2:])]
    )
    _wait_for(
        page,
        f"document.querySelector(\".box[data-id='{second['id']}'] .box-rect\")"
        ".getAttribute('x') === '11'",
    )


# The astronaut photo (512×512) with its parts; face and patch lie inside the person, which
# is stored after them: only the editor's order (smaller boxes on top) keeps them reachable.
ASTRONAUT_BOXES = (
    ("face", 172, 58, 96, 104),
    ("patch", 132, 348, 74, 78),
    ("person", 20, 12, 350, 500),
    ("helmet", 276, 342, 236, 170),
    ("flag", 0, 0, 96, 290),
    ("shuttle", 354, 0, 108, 282),
)


def test_a_photo_with_nested_boxes_shows_the_inner_ones_on_top_and_one_chip_per_label(
    watched_page: tuple[Page, Any], server: str, photo: Any, doc_shot: Any
) -> None:
    page, _ = watched_page
    pixels = photo("astronaut").copy()
    pixels[0, 0] = (5, 6, 7)  # bytes of its own: no other test's upload of the photo
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    files = {"file": ("astronaut.png", buffer.getvalue(), "image/png")}
    response = httpx.post(f"{server}/api/images", files=files)
    assert response.status_code in (200, 201), response.text
    image: dict[str, Any] = response.json()
    try:
        ids = {
            label: post_box(server, image["id"], *xywh, label) for label, *xywh in ASTRONAUT_BOXES
        }
        open_dashboard(page, server)
        open_image(page, image["filename"])
        _wait_for(page, f"document.querySelectorAll('.box').length === {len(ASTRONAUT_BOXES)}")

        # Each box's centre hits that box: the nested face and patch sit above the person.
        view = View(page, image)
        for label, x, y, w, h in ASTRONAUT_BOXES:
            hit = page.evaluate(
                "([x, y]) => document.elementFromPoint(x, y).closest('.box')?.dataset.id",
                list(view.screen(x + w / 2, y + h / 2)),
            )
            assert hit == str(ids[label]), label

        # One chip per label, in the server's colour, with 1 box here and in all images.
        rows = {r["label"]: r for r in _labels(server)}
        chips = {c["label"]: c for c in _chips(page)}
        for label, *_ in ASTRONAUT_BOXES:
            assert chips[label]["colour"] == _rgb(rows[label]["colour"]), label
            assert chips[label]["count"] == f"1 / {rows[label]['boxes']}", label
        colours = [chips[label]["colour"] for label, *_ in ASTRONAUT_BOXES]
        assert len(set(colours)) == len(colours), "two labels share a colour"

        # The face's hotkey makes it the active label; a click on the face selects it.
        face_key = chips["face"]["key"]
        _key(page, face_key)
        assert page.input_value("#box-label") == "face"
        page.mouse.click(*view.screen(220, 110))
        _wait_for(page, "document.getElementById('relabel').value === 'face'")

        def zoom_in(page: Page) -> None:
            page.click("#zoom-fit")
            fit = View(page, image)
            page.mouse.move(*fit.screen(2, 2))  # the top-left corner stays: every label shows
            page.mouse.wheel(0, -120)
            _wait_for(
                page,
                "document.querySelector('.editor-overlay').getBoundingClientRect().width"
                f" > {1.05 * fit.scale * image['width']}",
            )

        doc_shot(page, "editor", "#viewer", "start", zoom_in)
    finally:
        httpx.delete(f"{server}/api/images/{image['id']}")
