"""The page at scale: a WebGL scatter lassoed into crops, 50,000 points, 10,000 images."""

from __future__ import annotations

import json
import time
from functools import partial
from typing import Any

import httpx
import numpy as np

from app.palette import label_colours
from tests.browser.helpers import open_dashboard, wait_for

Page = Any
_wait_for = partial(wait_for, timeout=60.0)  # this file's default wait
TEXTURES = ("brick", "grass", "gravel")
SCATTER_POINTS = 50_000


def test_a_gallery_of_10000_images_scrolls_without_loading_them_all(
    big_page: tuple[Page, Any], shot: Any
) -> None:
    page, watch = big_page
    stored = httpx.get(f"{watch.origin}/api/health").json()["images"]
    assert stored == 10_000
    open_dashboard(page, watch.origin)
    page.wait_for_selector(".card img[alt='tiny-00000.png']")
    _wait_for(page, "document.getElementById('gallery-count').textContent.includes('10000')")

    def listing_calls() -> list[str]:
        return [u for u in watch.requests if u.split("?")[0] == f"{watch.origin}/api/images"]

    def thumbnails() -> int:
        return sum("/thumbnail" in u for u in watch.requests)

    def listed() -> tuple[int, list[str]]:
        """The cards shown and the listing calls made, once every call made has its cards
        drawn. The page asks for a page only when the last one has arrived, so at most
        one is in flight; calls read before cards make the pair consistent."""
        deadline = time.monotonic() + 60
        while True:
            calls = listing_calls()
            cards: int = page.locator(".card").count()
            if cards == 60 * len(calls):
                return cards, calls
            assert time.monotonic() < deadline, (cards, len(calls))
            time.sleep(0.05)

    assert listed()[0] >= 60
    # Scroll on until three pages are there: one page follows each time the end of the
    # list comes near while no page is loading (a slow answer lets later wheels pass).
    deadline = time.monotonic() + 60
    while page.locator(".card").count() < 180:
        assert time.monotonic() < deadline, "scrolling to the end loads no further pages"
        page.mouse.wheel(0, 2500)
        time.sleep(0.15)
    # Pages follow the scroll, each one /api/images call of 60 with the previous cursor.
    cards, calls = listed()
    assert all("limit=60" in u for u in calls)
    assert all("cursor=" in u for u in calls[1:])
    assert cards < 1000
    # Thumbnails load near the screen only: fewer than the cards listed.
    _wait_for(page, "[...document.querySelectorAll('.card img')].some(i => i.src)")
    time.sleep(0.5)
    loaded = page.evaluate("[...document.querySelectorAll('.card img')].filter(i => i.src).length")
    assert 0 < loaded <= thumbnails() < cards
    assert page.locator(".card").nth(cards - 1).locator(".name").inner_text() == (
        f"tiny-{cards - 1:05d}.png"
    )
    print(
        f"\ngallery of {stored} images: {cards} cards after scrolling, "
        f"{len(calls)} /api/images calls, {loaded} thumbnails fetched"
    )
    shot(page, "gallery-scrolled")


def _texture_boxes(origin: str, photo: Any) -> dict[int, str]:
    """15 boxes on each of three textures, at seeded random places; {box id: label}.

    Made once per server: a second call (another test of the module, in either order)
    finds them and adds none.
    """
    rng = np.random.default_rng(11)
    boxes: dict[int, str] = {}
    for name in TEXTURES:
        image = httpx.post(
            f"{origin}/api/images", files={"file": (f"{name}.png", photo.png(name), "image/png")}
        ).json()
        label = f"scale-{name}"
        made = httpx.get(f"{origin}/api/images/{image['id']}/boxes").json()
        if made:
            assert [b["label"] for b in made] == [label] * 15, made
            boxes.update({b["id"]: label for b in made})
            continue
        for _ in range(15):
            w, h = (int(v) for v in rng.integers(60, 140, size=2))
            x = int(rng.integers(0, image["width"] - w))
            y = int(rng.integers(0, image["height"] - h))
            response = httpx.post(
                f"{origin}/api/images/{image['id']}/boxes",
                json={"x": x, "y": y, "w": w, "h": h, "label": label},
            )
            assert response.status_code == 201, response.text
            boxes[response.json()["id"]] = label
    return boxes


def _inside(point: dict[str, float], box: tuple[float, float, float, float]) -> bool:
    left, top, right, bottom = box
    return left < point["x"] < right and top < point["y"] < bottom


def test_lasso_on_the_webgl_scatter_shows_the_crops_and_a_crop_opens_its_box(
    watched_page: tuple[Page, Any], server: str, photo: Any, shot: Any, scatter_points: Any
) -> None:
    page, watch = watched_page
    boxes = _texture_boxes(server, photo)
    open_dashboard(page, server)
    page.select_option("#compare-labels", [f"scale-{name}" for name in TEXTURES])
    page.select_option("#embed-method", "pca")
    page.select_option("#layer", "conv_head")
    page.click("#run-embedding")
    _wait_for(page, "document.getElementById('embedding-plot').dataset.drawMs")
    assert (
        page.evaluate("document.getElementById('embedding-plot').data.map(t => t.type)")
        == ["scattergl"] * 3
    )
    # One colour per label, the palette's (the same as in /api/labels and the editor).
    colours = {x["label"]: x["colour"] for x in httpx.get(f"{server}/api/labels").json()}
    assert colours == label_colours(colours)
    drawn = page.evaluate(
        "document.getElementById('embedding-plot')._fullData.map(t => [t.name, t.marker.color])"
    )
    assert dict(drawn) == {f"scale-{n}": colours[f"scale-{n}"] for n in TEXTURES}

    page.locator("#embedding-plot").scroll_into_view_if_needed()
    points = scatter_points(page, "embedding-plot")
    assert sorted(p["box_id"] for p in points) == sorted(boxes)
    # Lasso the bricks: a polygon around their points (a rectangle a few pixels wider).
    bricks = [p for p in points if p["label"] == "scale-brick"]
    pad = 6.0
    area = (
        min(p["x"] for p in bricks) - pad,
        min(p["y"] for p in bricks) - pad,
        max(p["x"] for p in bricks) + pad,
        max(p["y"] for p in bricks) + pad,
    )
    expected = {p["box_id"] for p in points if _inside(p, area)}
    assert {p["box_id"] for p in bricks} <= expected
    page.hover("#embedding-plot .main-svg")
    page.click("#embedding-plot .modebar-btn[data-val='lasso']")
    left, top, right, bottom = area
    page.mouse.move(left, top)
    page.mouse.down()
    for corner in ((right, top), (right, bottom), (left, bottom), (left, top + 1)):
        page.mouse.move(*corner, steps=10)
    page.mouse.up()
    page.wait_for_selector("#crops:not([hidden]) .crop")
    crops = [
        int(c)
        for c in page.eval_on_selector_all("#crop-list .crop", "cs => cs.map(c => c.dataset.boxId)")
    ]
    assert set(crops) == expected and len(crops) == len(expected)
    assert page.locator("#crops-title").inner_text().startswith(f"{len(expected)} selected box")
    _wait_for(page, "[...document.querySelectorAll('#crop-list img')].every(i => i.src)")
    shot(page, "lasso-crops")

    # A crop opens its image in the editor with that box selected.
    chosen = crops[len(crops) // 2]
    page.click(f"#crop-list .crop[data-box-id='{chosen}']")
    page.wait_for_selector("#viewer:not([hidden]) .box.selected")
    assert page.locator("#viewer .box.selected").get_attribute("data-id") == str(chosen)
    assert page.locator("#selected-box").inner_text().startswith(f"Box {chosen}:")
    shot(page, "crop-opens-box")

    # Search by label keeps the matching traces drawn and sends the others to the legend.
    page.fill("#embedding-search", "grass")
    _wait_for(page, "document.getElementById('embedding-found').textContent")
    visible = page.evaluate(
        "document.getElementById('embedding-plot').data.map(t => [t.name, t.visible])"
    )
    assert dict(visible) == {
        "scale-brick": "legendonly",
        "scale-grass": True,
        "scale-gravel": "legendonly",
    }
    assert page.locator("#embedding-found").inner_text().startswith("15 boxes")


def test_a_scatter_of_50000_points_draws_within_seconds(
    watched_page: tuple[Page, Any], server: str, photo: Any
) -> None:
    """The answer is the server's own figure for 50,000 points, handed to the page by
    Playwright, so the time is the page's: parsing the JSON, drawing, the first frame."""
    from app.plots import embedding_figure

    page, watch = watched_page
    _texture_boxes(server, photo)  # two labels at least, so the button runs
    rng = np.random.default_rng(5)
    centres = rng.normal(scale=20, size=(12, 2))
    labels = [f"scale-{n}" for n in TEXTURES] + [f"class-{i}" for i in range(9)]
    points = [
        {
            "box_id": i + 1,
            "image_id": i // 5 + 1,
            "label": labels[i % 12],
            "x": float(centres[i % 12, 0] + rng.normal()),
            "y": float(centres[i % 12, 1] + rng.normal()),
        }
        for i in range(SCATTER_POINTS)
    ]
    body = json.dumps(
        {
            "points": points,
            "method": "tsne",
            "perplexity": None,
            "layer": "conv_head",
            "model": "efficientnet_lite0",
            "descriptor": "gap",
            "figure": embedding_figure(points, colours=label_colours(labels)),
        }
    )
    page.route(
        "**/api/embeddings",
        lambda route: route.fulfill(status=200, content_type="application/json", body=body),
    )
    open_dashboard(page, server)
    page.click("#run-embedding")
    _wait_for(page, "document.getElementById('embedding-plot').dataset.drawMs", timeout=60)
    draw_ms = float(page.evaluate("document.getElementById('embedding-plot').dataset.drawMs"))
    assert page.evaluate("document.getElementById('embedding-plot').dataset.points") == str(
        SCATTER_POINTS
    )
    assert (
        page.evaluate(
            "document.getElementById('embedding-plot')._fullData"
            ".reduce((n, t) => n + t.customdata.length, 0)"
        )
        == SCATTER_POINTS
    )
    print(
        f"\nscatter of {SCATTER_POINTS} points ({len(body) / 1e6:.1f} MB answer): drawn "
        f"{draw_ms / 1000:.2f} s after the answer arrived"
    )
    assert draw_ms < 15_000  # the goal is 3 s; a generous bound for a loaded 2-core machine
