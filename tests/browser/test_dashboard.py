"""The dashboard in headless Chromium against the real server and the embedded model."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.browser.helpers import open_dashboard, open_image, post_box, post_image, wait_for

Page = Any
_wait_for = partial(wait_for, timeout=30.0)  # this file's default wait


def _upload(page: Page, name: str, png: bytes) -> None:
    page.set_input_files(
        "#upload-input", files=[{"name": f"{name}.png", "mimeType": "image/png", "buffer": png}]
    )
    page.wait_for_selector(f".card img[alt='{name}.png']")


def _images(origin: str) -> list[dict[str, Any]]:
    images: list[dict[str, Any]] = httpx.get(f"{origin}/api/images", params={"limit": 1000}).json()[
        "items"
    ]
    return images


def _boxes(origin: str, image_id: int) -> list[dict[str, Any]]:
    boxes: list[dict[str, Any]] = httpx.get(f"{origin}/api/images/{image_id}/boxes").json()
    return boxes


def _wait_boxes(
    origin: str, image_id: int, ok: Callable[[list[dict[str, Any]]], bool]
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 30  # a box saves in ms; 30 s only on a failure
    while True:
        boxes = _boxes(origin, image_id)
        if ok(boxes) or time.monotonic() > deadline:
            return boxes
        time.sleep(0.1)


def _drag(page: Page, start: tuple[float, float], end: tuple[float, float]) -> None:
    page.mouse.move(*start)
    page.mouse.down()
    page.mouse.move(*end, steps=8)
    page.mouse.up()


def _close(box: dict[str, Any], x: float, y: float, w: float, h: float) -> None:
    got = (box["x"], box["y"], box["w"], box["h"])
    assert got == pytest.approx((x, y, w, h), abs=1.0), got


def test_boxes_drawn_resized_moved_deleted_and_undone_in_image_pixels(
    watched_page: tuple[Page, Any], server: str, photo: Any, shot: Any
) -> None:
    page, _ = watched_page
    open_dashboard(page, server)
    shot(page, "empty")
    _upload(page, "chelsea", photo.png("chelsea"))
    image = next(i for i in _images(server) if i["filename"] == "chelsea.png")
    width, height = image["width"], image["height"]
    shown = open_image(page, "chelsea.png")
    scale = shown["width"] / width
    assert abs(scale - 1) > 0.2, f"the test needs a display scale other than 1, got {scale}"
    assert shown["height"] / height == pytest.approx(scale, rel=0.01)

    def screen(x: float, y: float) -> tuple[float, float]:
        return shown["x"] + x * scale, shown["y"] + y * scale

    page.fill("#box-label", "cat")
    _drag(page, screen(50, 40), screen(250, 200))
    boxes = _wait_boxes(server, image["id"], lambda b: len(b) == 1)
    assert len(boxes) == 1 and boxes[0]["label"] == "cat"
    _close(boxes[0], 50, 40, 200, 160)
    assert page.evaluate("JSON.parse(localStorage.getItem('featuregap.recentLabels'))")[0] == "cat"
    assert "cat" in page.eval_on_selector_all("#recent-labels option", "os => os.map(o => o.value)")
    shot(page, "drawn")

    # The south-east handle of the selected box, dragged by (+50, +60) image pixels.
    _drag(page, screen(250, 200), screen(300, 260))
    boxes = _wait_boxes(server, image["id"], lambda b: abs(b[0]["w"] - 250) <= 1)
    _close(boxes[0], 50, 40, 250, 220)
    shot(page, "resized")

    _drag(page, screen(150, 120), screen(180, 140))
    boxes = _wait_boxes(server, image["id"], lambda b: abs(b[0]["x"] - 80) <= 1)
    _close(boxes[0], 80, 60, 250, 220)
    shot(page, "moved")

    page.keyboard.press("Delete")
    assert _wait_boxes(server, image["id"], lambda b: not b) == []
    page.keyboard.press("Control+z")
    boxes = _wait_boxes(server, image["id"], lambda b: len(b) == 1)
    _close(boxes[0], 80, 60, 250, 220)
    page.keyboard.press("Control+z")  # undoes the move
    boxes = _wait_boxes(server, image["id"], lambda b: abs(b[0]["x"] - 50) <= 1)
    _close(boxes[0], 50, 40, 250, 220)
    assert page.locator(".box").count() == 1
    assert "Ctrl+Z" in page.locator("#shortcuts").inner_text()
    shot(page, "undone")
    with page.expect_download() as download:
        page.click("#coco-export")
    coco = json.loads(Path(download.value.path()).read_text())
    # The export holds every image of the server; this test's own is the chelsea it made.
    assert {"id": image["id"], "file_name": "chelsea.png", "width": width, "height": height} in (
        coco["images"]
    )
    ours = [a["bbox"] for a in coco["annotations"] if a["image_id"] == image["id"]]
    assert ours == [pytest.approx([50, 40, 250, 220], abs=1)]

    page.set_viewport_size({"width": 420, "height": 800})
    _wait_for(page, "document.documentElement.scrollWidth <= 420")  # once laid out again
    shot(page, "narrow")

    page.once("dialog", lambda dialog: dialog.accept())
    page.click(f".card[data-image-id='{image['id']}'] button:has-text('Delete')")
    page.wait_for_selector(f".card[data-image-id='{image['id']}']", state="detached")
    assert httpx.get(f"{server}/api/images/{image['id']}").status_code == 404


def _traces(page: Page, plot_id: str) -> int:
    page.wait_for_selector(f"#{plot_id}.js-plotly-plot .main-svg")
    count: int = page.evaluate(f"document.getElementById('{plot_id}').data.length")
    return count


def test_heat_map_overlay_box_scores_predictions_and_errors(
    watched_page: tuple[Page, Any], server: str, photo: Any, shot: Any
) -> None:
    page, watch = watched_page
    open_dashboard(page, server)
    # Dropped on the drop zone, as a file dragged from the desktop would be.
    page.evaluate(
        """async (b64) => {
        const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
        const data = new DataTransfer();
        data.items.add(new File([bytes], "coffee.png", { type: "image/png" }));
        const zone = document.getElementById("drop-zone");
        zone.dispatchEvent(new DragEvent("drop", { dataTransfer: data, cancelable: true }));
    }""",
        base64.b64encode(photo.png("coffee")).decode(),
    )
    page.wait_for_selector(".card img[alt='coffee.png']")
    image = next(i for i in _images(server) if i["filename"] == "coffee.png")
    box_id = post_box(server, image["id"], 160, 40, 300, 260, "cup")
    page.reload()
    page.wait_for_selector("body[data-ready='1']")
    open_image(page, "coffee.png")
    page.click("#run-heatmap")
    assert _traces(page, "heatmap-plot") >= 1
    page.wait_for_selector("#heatmap-scores td")
    first_row = page.locator("#heatmap-scores tr").nth(1).locator("td").all_inner_texts()
    assert first_row[0] == str(box_id)
    assert page.locator("#image-analysis-error").inner_text() == ""
    page.locator("#heatmap-opacity").fill("0.8")
    opacities = page.evaluate(
        "document.getElementById('heatmap-plot').data"
        ".filter(t => t.type === 'heatmap').map(t => t.opacity)"
    )
    assert opacities and all(o == pytest.approx(0.8) for o in opacities)
    shot(page, "heatmap")
    with page.expect_download() as download:
        page.click("#scores-csv")
    # The server's CSV (formula-guarded), not one built in the page.
    csv_lines = Path(download.value.path()).read_text().splitlines()
    assert csv_lines[0].startswith("image_id,box_id,label,x,y,w,h,") and "energy" in csv_lines[0]
    assert csv_lines[1].startswith(f"{image['id']},{box_id},cup,160.0,40.0,300.0,260.0,")

    page.click("#run-predictions")
    page.wait_for_selector("#predictions li")
    assert "espresso" in page.locator("#predictions div").first.inner_text()
    assert page.locator("#predictions h4").count() == 2  # the image and its box

    # An API error appears next to the button that caused it, in the server's words.
    page.fill("#target", "5000")
    page.click("#run-heatmap")
    error = page.locator("#image-analysis-error")
    error.wait_for(state="visible")
    assert "5000" in error.inner_text()
    shot(page, "heatmap-error")
    # The browser logs the 4xx answer itself; that one error is expected.
    watch.errors[:] = [e for e in watch.errors if "status of 422" not in e]


def test_two_textures_distance_matrix_profile_and_scatter(
    watched_page: tuple[Page, Any], server: str, photo: Any, shot: Any, scatter_points: Any
) -> None:
    page, _ = watched_page
    open_dashboard(page, server)
    # Both textures through the picker at once (several files in one upload).
    page.set_input_files(
        "#upload-input",
        files=[
            {"name": f"{name}.png", "mimeType": "image/png", "buffer": photo.png(name)}
            for name in ("brick", "grass")
        ],
    )
    page.wait_for_selector(".card img[alt='grass.png']")
    page.wait_for_selector(".card img[alt='brick.png']")
    images = {i["filename"]: i for i in _images(server)}
    for name in ("brick", "grass"):
        for row in range(2):
            for col in range(3):
                post_box(
                    server,
                    images[f"{name}.png"]["id"],
                    20 + 160 * col,
                    40 + 220 * row,
                    140,
                    180,
                    name,
                )
    page.reload()
    page.wait_for_selector("body[data-ready='1']")
    page.select_option("#compare-labels", ["brick", "grass"])
    page.select_option("#measure", "euclidean")
    page.fill("#permutations", "50")
    with page.expect_response("**/api/distances") as answer:
        page.click("#run-distances")
    assert answer.value.status == 202  # 12 boxes × 50 draws: a job, with a progress bar
    assert _traces(page, "distances-plot") >= 1
    page.wait_for_selector("#distances-table td")
    assert page.locator("#analysis-error").inner_text() == ""
    pair = page.locator("#distances-table tr").nth(1).locator("td").all_inner_texts()
    assert {"brick", "grass"} <= set(pair[0].replace("–", " ").split())
    # Six boxes of each label on one image each: 1 vs 1 images allows no test, and the
    # page says why instead of printing a p-value.
    assert pair[2] == "no test"
    assert "no pair has enough units for a p-value" in page.locator("#distances-note").inner_text()
    warnings = page.locator("#distances-warnings").inner_text()
    assert "single image" in warnings and "too few images" in warnings
    shot(page, "distances")

    page.click("#run-separation")
    assert _traces(page, "separation-plot") == 2  # inter / intra above, silhouette below
    shot(page, "separation")

    # Two runs at once: each has a row of its own, and the one that ends first leaves the
    # other's row and its Cancel in place. The profile's job here is played by the test
    # (it never ends), so the overlap does not depend on timing.
    held = {
        "id": "held",
        "kind": "separation",
        "state": "running",
        "progress": 0.5,
        "message": "held by the test",
        "result": None,
        "error": None,
        "created_at": "2026-01-01T00:00:00",
        "finished_at": None,
    }
    page.route(
        "**/api/separation",
        lambda route: route.fulfill(status=202, json={"job_id": "held", "state": "queued"}),
    )
    page.route("**/api/jobs/held", lambda route: route.fulfill(json=held))
    page.click("#run-separation")
    page.wait_for_selector("#job .job-row")
    with page.expect_response("**/api/distances"):
        page.click("#run-distances")  # a real run, answered from the cache meanwhile
    _wait_for(page, "document.querySelectorAll('#job .job-row').length === 1")
    profile_row = page.locator("#job .job-row", has=page.locator("[aria-label='Layer profile']"))
    assert profile_row.count() == 1 and page.locator("#job").is_visible()
    assert "held by the test" in profile_row.inner_text()
    with page.expect_request(lambda r: r.method == "DELETE" and r.url.endswith("/jobs/held")):
        profile_row.locator(".job-cancel").click()
    page.wait_for_selector("#job", state="hidden")
    page.unroute("**/api/separation")
    page.unroute("**/api/jobs/held")
    assert page.locator("#analysis-error").inner_text() == ""

    # A long profile (32 layers, MMD between the boxes' sets of pixels) runs as a job;
    # Cancel stops it.
    layers = page.eval_on_selector_all("#profile-layers option", "os => os.map(o => o.value)")
    page.select_option("#profile-layers", layers[:32])
    page.select_option("#measure", "mmd")
    page.select_option("#descriptor", "pixels")
    with page.expect_response("**/api/separation") as answer:
        page.click("#run-separation")
    job_id = answer.value.json()["job_id"]
    page.wait_for_selector("#job:not([hidden])")
    shot(page, "job-running")
    page.click("#job .job-cancel")
    page.wait_for_selector("#job", state="hidden")
    deadline = time.monotonic() + 20
    while (state := httpx.get(f"{server}/api/jobs/{job_id}").json()["state"]) == "running":
        assert time.monotonic() < deadline, "the cancelled job kept running"
        time.sleep(0.2)
    assert state == "cancelled"
    assert page.locator("#analysis-error").inner_text() == ""
    page.select_option("#descriptor", "gap")

    page.click("#run-embedding")
    assert _traces(page, "embedding-plot") >= 1
    _wait_for(page, "document.getElementById('embedding-plot').dataset.drawMs")
    # Plotly's drag layer sits above the points: point at them with the mouse itself.
    page.locator("#embedding-plot").scroll_into_view_if_needed()
    points = scatter_points(page, "embedding-plot")
    assert len(points) == 12
    centre = (points[0]["x"], points[0]["y"])
    page.mouse.move(centre[0] - 5, centre[1] - 5)
    page.mouse.move(*centre, steps=5)
    _wait_for(page, "document.getElementById('hover-img').src.startsWith('blob:')")
    shot(page, "scatter-hover")
    page.mouse.click(*centre)
    page.wait_for_selector("#viewer:not([hidden]) .box")
    assert page.locator("#viewer .box").count() == 6
    shot(page, "scatter-click-opens-image")


def test_api_token_from_settings_is_sent_with_every_call(
    token_page: tuple[Page, Any], photo: Any, shot: Any
) -> None:
    page, watch = token_page
    page.goto(watch.origin + "/")
    error = page.locator("#controls-error")
    error.wait_for(state="visible")  # without the token the API answers 401, shown here
    assert "token" in error.inner_text().lower() or "401" in error.inner_text()
    shot(page, "no-token")
    page.wait_for_selector("#settings[open]")  # a 401 opens the settings with a hint
    assert "token" in page.locator("#settings-error").inner_text()
    page.fill("#api-token", "s3cret-token")
    page.click("#save-token")
    _wait_for(page, "document.getElementById('layer').options.length > 0")
    assert error.inner_text() == ""
    _upload(page, "chelsea", photo.png("chelsea"))  # XHR and the thumbnail carry it too
    _wait_for(
        page, "document.querySelector(\".card img[alt='chelsea.png']\").src.startsWith('blob:')"
    )
    shot(page, "with-token")
    assert page.evaluate("localStorage.getItem('featuregap.token')") == "s3cret-token"
    watch.errors[:] = [e for e in watch.errors if "status of 401" not in e]


def test_html_and_formulas_in_labels_stay_inert(
    watched_page: tuple[Page, Any], server: str, photo: Any, shot: Any
) -> None:
    page, _watch = watched_page
    link = '<a href="http://evil.example/">win</a><span style="font-size:200px">BIG</span>'
    formula = '=HYPERLINK("http://evil.example","open")'
    response = httpx.post(
        f"{server}/api/images", files={"file": ("rocket.png", photo.png("rocket"), "image/png")}
    )
    assert response.status_code in (200, 201), response.text
    image_id = response.json()["id"]
    post_box(server, image_id, 150, 40, 120, 300, link)
    post_box(server, image_id, 20, 300, 100, 100, formula)
    open_dashboard(page, server)
    open_image(page, "rocket.png")
    page.click("#run-heatmap")
    assert _traces(page, "heatmap-plot") >= 3
    # Shown as the characters typed: no link, no styled span, in the caption or the legend.
    assert page.locator("#heatmap-plot a[href*='evil']").count() == 0
    assert (
        page.evaluate(
            "[...document.querySelectorAll('#heatmap-plot [style]')]"
            ".filter(e => e.getAttribute('style').includes('200px')).length"
        )
        == 0
    )
    captions = page.locator("#heatmap-plot .annotation-text").all_text_contents()
    assert any('<a href="http://evil.example/">win</a>' in c for c in captions), captions
    shot(page, "hostile-labels")
    with page.expect_download() as download:
        page.click("#scores-csv")
    text = Path(download.value.path()).read_text()
    assert "'=HYPERLINK(" in text and ",=HYPERLINK(" not in text
    # Long labels in the page's lists (the gallery's filter, the label choices) do not
    # widen it past a phone's width.
    page.set_viewport_size({"width": 420, "height": 800})
    _wait_for(page, "document.documentElement.scrollWidth <= 420")


def _screen(shown: dict[str, float], width: int) -> Callable[[float, float], tuple[float, float]]:
    """Image pixels → screen pixels for an overlay shown at ``shown`` (its bounding box)."""
    scale = shown["width"] / width

    def screen(x: float, y: float) -> tuple[float, float]:
        return shown["x"] + x * scale, shown["y"] + y * scale

    return screen


def _by_label(boxes: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {b["label"]: b for b in boxes}


def test_new_boxes_take_the_active_label_and_relabelling_is_explicit(
    watched_page: tuple[Page, Any], server: str, photo: Any, shot: Any
) -> None:
    page, _ = watched_page
    image = post_image(server, "astronaut", photo.png("astronaut"))
    open_dashboard(page, server)
    screen = _screen(open_image(page, "astronaut.png"), image["width"])

    # Issue 12: draw, type the next label, draw again. The first box (still selected while
    # the label is typed) must keep its label; before the fix it became "leaves".
    page.fill("#box-label", "flower")
    _drag(page, screen(30, 30), screen(130, 110))
    _wait_boxes(server, image["id"], lambda b: len(b) == 1)
    page.fill("#box-label", "leaves")
    _drag(page, screen(200, 250), screen(330, 400))
    _wait_for(page, "document.getElementById('selected-box').textContent.includes('leaves')")
    page.wait_for_timeout(300)  # room for a stray PATCH to land, were one sent
    boxes = _wait_boxes(server, image["id"], lambda b: len(b) == 2)
    assert sorted(b["label"] for b in boxes) == ["flower", "leaves"]
    first, second = _by_label(boxes)["flower"]["id"], _by_label(boxes)["leaves"]["id"]
    _close(_by_label(boxes)["flower"], 30, 30, 100, 80)
    _close(_by_label(boxes)["leaves"], 200, 250, 130, 150)
    shot(page, "two-labels")

    # Selecting a box shows its label in the relabel field and leaves the active label alone.
    page.mouse.click(*screen(80, 70))
    _wait_for(page, "document.getElementById('relabel').value === 'flower'")
    assert page.input_value("#box-label") == "leaves"
    page.fill("#relabel", "rose")
    page.press("#relabel", "Enter")
    boxes = _wait_boxes(
        server, image["id"], lambda b: {x["label"] for x in b} == {"rose", "leaves"}
    )
    assert {b["id"]: b["label"] for b in boxes} == {first: "rose", second: "leaves"}

    # Double-click a box: its label is ready to edit; the button applies it.
    page.mouse.dblclick(*screen(260, 320))
    _wait_for(page, "document.activeElement.id === 'relabel'")
    assert page.input_value("#relabel") == "leaves"
    page.fill("#relabel", "foliage")
    page.click("#relabel-apply")
    boxes = _wait_boxes(
        server, image["id"], lambda b: {x["label"] for x in b} == {"rose", "foliage"}
    )
    assert {b["id"]: b["label"] for b in boxes} == {first: "rose", second: "foliage"}
    _close(_by_label(boxes)["foliage"], 200, 250, 130, 150)  # a double-click moves nothing

    # With "rose" selected, a new box still takes the active label.
    page.mouse.click(*screen(80, 70))
    _wait_for(page, "document.getElementById('relabel').value === 'rose'")
    _drag(page, screen(380, 40), screen(480, 140))
    boxes = _wait_boxes(server, image["id"], lambda b: len(b) == 3)
    assert sorted(b["label"] for b in boxes) == ["foliage", "leaves", "rose"]
    shot(page, "relabelled")


def test_nested_boxes_drawn_with_shift_or_draw_mode_and_moved_without(
    watched_page: tuple[Page, Any], server: str, photo: Any, shot: Any
) -> None:
    page, _ = watched_page
    image = post_image(server, "camera", photo.png("camera"))
    open_dashboard(page, server)
    shown = open_image(page, "camera.png")
    assert abs(shown["width"] / image["width"] - 1) > 0.05, "the test needs a scale other than 1"
    screen = _screen(shown, image["width"])
    assert "Shift" in page.locator("#editor-hint").inner_text()

    page.fill("#box-label", "person")
    _drag(page, screen(60, 40), screen(380, 470))
    _wait_boxes(server, image["id"], lambda b: len(b) == 1)
    page.fill("#box-label", "face")
    # Shift+drag inside the (selected) person draws a face instead of moving the person.
    page.keyboard.down("Shift")
    _drag(page, screen(150, 70), screen(247, 181))
    page.keyboard.up("Shift")
    boxes = _wait_boxes(server, image["id"], lambda b: len(b) == 2)
    _close(_by_label(boxes)["person"], 60, 40, 320, 430)
    _close(_by_label(boxes)["face"], 150, 70, 97, 111)
    shot(page, "nested")

    # Without the modifier, dragging the selected face's body moves it (and only it).
    _drag(page, screen(200, 120), screen(223, 133))
    boxes = _wait_boxes(server, image["id"], lambda b: abs(_by_label(b)["face"]["x"] - 173) <= 1)
    _close(_by_label(boxes)["face"], 173, 83, 97, 111)
    _close(_by_label(boxes)["person"], 60, 40, 320, 430)

    # Draw mode (N): a plain drag inside the person draws; a click selects the box under it.
    page.keyboard.press("n")
    assert page.get_attribute("#draw-mode", "aria-pressed") == "true"
    page.fill("#box-label", "hand")
    _drag(page, screen(90, 300), screen(171, 353))
    boxes = _wait_boxes(server, image["id"], lambda b: len(b) == 3)
    _close(_by_label(boxes)["hand"], 90, 300, 81, 53)
    _close(_by_label(boxes)["person"], 60, 40, 320, 430)
    page.mouse.click(*screen(300, 420))
    _wait_for(page, "document.getElementById('relabel').value === 'person'")
    page.click("#draw-mode")
    assert page.get_attribute("#draw-mode", "aria-pressed") == "false"
    shot(page, "draw-mode")
