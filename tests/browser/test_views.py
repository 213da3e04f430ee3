"""The heat-map panel, the comparison grid and the analysis views in headless Chromium.

With ``FEATUREGAP_DOC_SCREENSHOTS=1`` these tests also write the README's screenshots
(heat-map panel and grid, matrix, profile, scatter at 1280×800 and 900×700) to
``docs/screenshots/``.
"""

from __future__ import annotations

import io
from functools import partial
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.browser.helpers import open_dashboard, open_image, post_box, post_image, wait_for

Page = Any
_wait_for = partial(wait_for, timeout=60.0)  # this file's default wait


def _own_png(photo: Any, name: str) -> bytes:
    """The photo with one pixel changed: bytes of its own, so the store (one image per
    content hash, first name kept) never hands back another test's upload of the same photo."""
    pixels = photo(name).copy()
    pixels[0, 0] = (1, 2, 3)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _drawn(page: Page, plot_id: str) -> None:
    page.wait_for_selector(f"#{plot_id}.js-plotly-plot .main-svg")


def _heatmap_api(origin: str, **body: Any) -> dict[str, Any]:
    response = httpx.post(f"{origin}/api/heatmaps", json=body, timeout=120)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def test_heat_map_panel_target_search_channel_prediction_click_grid_and_errors(
    watched_page: tuple[Page, Any], server: str, photo: Any, shot: Any, doc_shot: Any
) -> None:
    page, watch = watched_page
    image = post_image(server, "chelsea-panel", _own_png(photo, "chelsea"))
    cat = post_box(server, image["id"], 140, 20, 180, 210, "cat face")
    ear = post_box(server, image["id"], 20, 200, 110, 90, "background")
    open_dashboard(page, server)
    open_image(page, "chelsea-panel.png")

    # The panel sits right under the image and its label bar (the image keeps the width),
    # and beside it on a wide screen.
    stage = page.locator("#editor-stage").bounding_box()
    editor = page.locator(".editor-main").bounding_box()
    panel = page.locator("#heat-panel").bounding_box()
    assert 0 <= panel["y"] - (editor["y"] + editor["height"]) <= 20
    assert panel["y"] - (stage["y"] + stage["height"]) < 200
    assert abs(panel["x"] - stage["x"]) <= 1 and stage["width"] > 800
    page.set_viewport_size({"width": 1600, "height": 900})
    page.wait_for_timeout(200)
    stage = page.locator("#editor-stage").bounding_box()
    panel = page.locator("#heat-panel").bounding_box()
    assert panel["x"] >= stage["x"] + stage["width"] and panel["y"] < stage["y"] + stage["height"]
    page.set_viewport_size({"width": 1280, "height": 800})

    # The class to explain, found by typing part of its name in the model's class list.
    options = page.eval_on_selector_all("#class-names option", "os => os.map(o => o.value)")
    assert len(options) == 1000 and "Egyptian cat (285)" in options
    page.select_option("#method", "gradcam")
    page.fill("#target", "Egyptian cat (285)")
    with page.expect_request("**/api/heatmaps") as sent:
        page.click("#run-heatmap")
    assert sent.value.post_data_json["target"] == 285
    _drawn(page, "heatmap-plot")
    caption = page.locator("#heatmap-caption").inner_text()
    assert "gradcam on bn2, explaining Egyptian cat (285)" in caption, caption
    bar = page.evaluate(
        "document.getElementById('heatmap-plot').data.find(t => t.type === 'heatmap')"
        ".colorbar.title.text"
    )
    assert bar == "gradcam (min-max scaled, 0..1)"
    # Each box in its label's colour, the one the editor and the scatter use (/api/labels).
    colours = {r["label"]: r["colour"] for r in httpx.get(f"{server}/api/labels").json()}
    drawn = page.evaluate(
        """() => { const p = document.getElementById('heatmap-plot');
        return p.data.flatMap((t, k) => t.customdata
            ? [[t.customdata[0], p.layout.shapes[k - 1].line.color]] : []); }"""
    )
    assert dict(drawn) == {cat: colours["cat face"], ear: colours["background"]}, drawn
    assert colours["cat face"] != colours["background"]
    # Every score column explains itself.
    tips = page.eval_on_selector_all(
        "#heatmap-scores th", "hs => hs.map(h => [h.textContent, h.title])"
    )
    scored = {text: tip for text, tip in tips if text in ("pointing game", "energy", "auc", "iou")}
    assert len(scored) == 4 and all("Higher is better" in tip for tip in scored.values()), tips

    # A reduction explains no class, and the caption says so (not "the top class").
    page.select_option("#method", "mean")
    assert page.locator("#target-field").is_hidden()
    page.click("#run-heatmap")
    _wait_for(page, "document.getElementById('heatmap-caption').textContent.startsWith('mean')")
    caption = page.locator("#heatmap-caption").inner_text()
    assert "no class" in caption and "explaining" not in caption, caption

    # One channel: its field appears, and the map is that channel's (checked against the API).
    page.select_option("#method", "channel")
    assert page.locator("#channel-field").is_visible()
    page.fill("#channel", "7")
    page.select_option("#normalise", "none")
    with page.expect_request("**/api/heatmaps") as sent:
        page.click("#run-heatmap")
    assert sent.value.post_data_json["channel"] == 7
    caption_js = "document.getElementById('heatmap-caption').textContent"
    _wait_for(page, f"{caption_js}.startsWith('channel 7')")
    assert page.locator("#image-analysis-error").inner_text() == ""
    want = _heatmap_api(
        server, image_id=image["id"], layer="bn2", method="channel", channel=7, normalise="none"
    )
    row = page.locator("#heatmap-scores tr").nth(1).locator("td").all_inner_texts()
    energy = want["boxes"][0]["scores"]["energy"]
    assert row[0] == str(cat) and float(row[7]) == pytest.approx(energy, rel=1e-3)

    # Native size: the request says so, and the scores are those of the image's own grid
    # (the mean over bn2's channels: its cat-face energy differs between the two modes).
    page.select_option("#method", "mean")
    page.check("#native")
    with page.expect_request("**/api/heatmaps") as sent:
        page.click("#run-heatmap")
    assert sent.value.post_data_json["mode"] == "native"
    answers = {
        mode: _heatmap_api(server, image_id=image["id"], layer="bn2", method="mean", mode=mode)
        for mode in ("resize", "native")
    }
    energies = {mode: a["boxes"][0]["scores"]["energy"] for mode, a in answers.items()}
    assert energies["native"] != pytest.approx(energies["resize"], rel=1e-2), energies
    _wait_for(
        page,
        "Math.abs(+document.querySelectorAll('#heatmap-scores tr')[1].cells[7].textContent"
        f" - {energies['native']}) <= 1e-3 * {energies['native']}",
    )
    page.uncheck("#native")
    page.select_option("#normalise", "minmax")

    # A click on a prediction makes it the class to explain (and a class method again).
    page.click("#run-predictions")
    first = page.locator("#predictions .prediction").first
    first.wait_for()
    index = first.get_attribute("data-index")
    label = first.inner_text().split(" (")[0]
    first.click()
    assert page.input_value("#target") == f"{label} ({index})"
    assert page.input_value("#method") == "gradcam"
    with page.expect_request("**/api/heatmaps") as sent:
        page.click("#run-heatmap")
    assert sent.value.post_data_json["target"] == int(index)
    _wait_for(page, f"document.getElementById('heatmap-caption').textContent.includes('({index})')")

    # The button is disabled while its call runs.
    disabled = page.evaluate(
        "() => { const b = document.getElementById('run-heatmap'); b.click(); return b.disabled; }"
    )
    assert disabled
    _wait_for(page, "!document.getElementById('run-heatmap').disabled")

    # Side by side: three methods × two layers, each cell with its own boxes' scores.
    page.click("#compare summary")
    page.select_option("#grid-methods", ["mean", "l2", "gradcam"])
    layers = ["blocks.5.0.conv_pwl", "bn2"]
    page.select_option("#grid-layers", layers)
    page.click("#run-grid")
    _wait_for(page, "document.querySelectorAll('#heat-grid .heat-cell table tr').length === 18")
    assert page.locator("#heat-grid .cell-plot.js-plotly-plot").count() == 6
    assert page.locator("#image-analysis-error").inner_text() == ""
    titles = page.locator("#heat-grid h4").all_inner_texts()
    assert titles == [f"{m} · {layer}" for m in ("mean", "l2", "gradcam") for layer in layers]
    combinations = [(m, la) for m in ("mean", "l2", "gradcam") for la in layers]
    for i, (method, layer) in enumerate(combinations):
        body: dict[str, Any] = {"image_id": image["id"], "layer": layer, "method": method}
        if method == "gradcam":
            body["target"] = int(index)
        answer = _heatmap_api(server, **body)
        cells = page.locator("#heat-grid .heat-cell").nth(i).locator("table tr")
        assert cells.count() == 3  # header, the two boxes
        by_box = {b["id"]: b["scores"]["energy"] for b in answer["boxes"]}
        for r in (1, 2):
            values = cells.nth(r).locator("td").all_inner_texts()
            assert float(values[3]) == pytest.approx(by_box[int(values[0])], rel=1e-3), (i, values)
    assert {cat, ear} == {b["id"] for b in answer["boxes"]}
    shot(page, "grid")
    doc_shot(page, "heatmap-panel", "#heat-panel", "end")
    doc_shot(page, "heatmap-grid", "#grid-view")

    # An error leaves no stale map: the view empties and the message shows by the buttons.
    page.fill("#target", "5000")
    page.click("#run-heatmap")
    error = page.locator("#image-analysis-error")
    error.wait_for(state="visible")
    assert "5000" in error.inner_text()
    assert page.locator("#heatmap-view").is_hidden()
    assert page.locator("#heatmap-plot .main-svg").count() == 0
    # The browser logs the 4xx answer itself; that one error is expected.
    watch.errors[:] = [e for e in watch.errors if "status of 422" not in e]


def test_analysis_views_explain_themselves_and_take_any_measure(
    watched_page: tuple[Page, Any],
    server: str,
    photo: Any,
    shot: Any,
    scatter_points: Any,
    doc_shot: Any,
) -> None:
    page, _ = watched_page
    for name in ("gravel", "astronaut"):
        image = post_image(server, f"{name}-views", _own_png(photo, name))
        for i in range(4):
            post_box(server, image["id"], 20 + 100 * i, 40, 90, 120, f"{name} patch")
    labels = ["gravel patch", "astronaut patch"]
    open_dashboard(page, server)
    page.select_option("#compare-labels", labels)
    # Every measure says what it is and which way is better, before anything runs.
    titles = page.eval_on_selector_all("#measure option", "os => os.map(o => [o.value, o.title])")
    assert len(titles) == 8 and all("Direction: higher = " in t for _, t in titles), titles
    texts = page.eval_on_selector_all("#measure option", "os => os.map(o => o.textContent)")
    assert "euclidean: higher = farther apart (a distance; 0 = same), on gap" in texts
    assert not any("higher is better" in t for t in texts)

    page.select_option("#measure", "euclidean")
    page.fill("#permutations", "20")
    page.click("#run-distances")
    _drawn(page, "distances-plot")
    # Each label with its group size, after a square in its colour (the editor's).
    colours = {r["label"]: r["colour"] for r in httpx.get(f"{server}/api/labels").json()}
    ticks = page.evaluate("document.getElementById('distances-plot').layout.xaxis.ticktext")
    assert sorted(ticks) == sorted(
        f'<span style="color:{colours[label]}">■</span> {label}<br>4 boxes, 1 image'
        for label in labels
    )
    fills = page.eval_on_selector_all(
        "#distances-plot .xtick tspan[style*='fill']", "ts => ts.map(t => t.style.fill)"
    )
    want = {
        "rgb({}, {}, {})".format(*(int(colours[la][i : i + 2], 16) for i in (1, 3, 5)))
        for la in labels
    }
    assert set(fills) == want and colours[labels[0]] != colours[labels[1]], fills
    warnings = page.locator("#distances-warnings")
    assert warnings.is_visible() and "image" in warnings.inner_text()
    note = page.locator("#distances-note").inner_text()
    assert "higher = farther apart" in note and "gravel patch: 1 image, effective size" in note
    heads = page.eval_on_selector_all("#distances-table th", "hs => hs.map(h => h.title)")
    assert heads and all(heads), heads
    shot(page, "matrix")
    doc_shot(page, "matrix", "#distances-view")

    # The automatic profile: six block outputs, never drop_path or other non-block nodes.
    page.select_option("#measure", "mmd")
    assert page.input_value("#descriptor") == "pixels"
    with page.expect_request("**/api/separation") as sent:
        page.click("#run-separation")
    chosen = sent.value.post_data_json["layers"]
    assert len(chosen) == 6 and chosen[0] == "blocks.0.0.bn2"
    assert all(layer.startswith("blocks.") and "drop_path" not in layer for layer in chosen)
    _drawn(page, "separation-plot")
    layout = page.evaluate("document.getElementById('separation-plot').layout")
    assert layout["yaxis"]["domain"][0] > layout["yaxis2"]["domain"][1]  # two panels
    names = page.evaluate("document.getElementById('separation-plot').data.map(t => t.name)")
    assert names == ["inter / intra", "silhouette"]
    assert page.locator("#analysis-error").inner_text() == ""
    heads = page.eval_on_selector_all("#separation-table th", "hs => hs.map(h => h.title)")
    assert all(heads), heads
    shot(page, "profile")
    doc_shot(page, "profile", "#separation-view")

    # Any measure, each with the descriptor it consumes: an answer, never a raw error.
    page.select_option("#profile-layers", ["blocks.5.0.conv_pwl", "bn2"])
    for measure in page.eval_on_selector_all("#measure option", "os => os.map(o => o.value)"):
        page.select_option("#measure", measure)
        with page.expect_response("**/api/separation") as answer:
            page.click("#run-separation")
        assert answer.value.status == 200, (measure, answer.value.text())
        _wait_for(page, "!document.getElementById('run-separation').disabled")
        assert page.locator("#analysis-error").inner_text() == "", measure

    # The scatter: perplexity, the layer and descriptor in its title, label search.
    page.select_option("#measure", "mmd")  # its descriptor, pixels, has no single point
    page.select_option("#embed-method", "tsne")
    page.fill("#perplexity", "2")
    with page.expect_request("**/api/embeddings") as sent:
        page.click("#run-embedding")
    assert sent.value.post_data_json["perplexity"] == 2
    assert sent.value.post_data_json["descriptor"] == "gap"
    _drawn(page, "embedding-plot")
    _wait_for(page, "document.getElementById('embedding-plot').dataset.drawMs")
    title = page.evaluate("document.getElementById('embedding-plot').layout.title.text")
    want_title = "t-SNE (perplexity 2) of 8 boxes<br><sub>gap descriptors at bn2 · "
    assert title.startswith(want_title), title
    assert "uses gap" in page.locator("#embedding-warnings").inner_text()
    page.fill("#embedding-search", "gravel")
    assert page.locator("#embedding-found").inner_text() == "4 boxes match “gravel”"
    page.fill("#embedding-search", "")
    page.locator("#embedding-plot").scroll_into_view_if_needed()
    points = scatter_points(page, "embedding-plot")
    assert len(points) == 8
    page.mouse.move(points[0]["x"] - 5, points[0]["y"] - 5)
    page.mouse.move(points[0]["x"], points[0]["y"], steps=5)
    _wait_for(page, "document.getElementById('hover-img').src.startsWith('blob:')")
    shot(page, "scatter")
    doc_shot(page, "scatter", "#embedding-view")
    page.select_option("#embed-method", "pca")
    assert page.locator("#hover-thumb").is_hidden()
    assert page.locator("#perplexity-field").is_hidden()


def test_the_interval_column_names_its_method(
    watched_page: tuple[Page, Any], server: str, photo: Any
) -> None:
    page, _ = watched_page
    groups = {
        "interval stone": ("brick", "grass", "gravel", "camera"),
        "interval photo": ("coffee", "rocket", "chelsea", "astronaut"),
    }
    for label, names in groups.items():
        for name in names:
            image = post_image(server, f"{name}-interval", _own_png(photo, name))
            post_box(server, image["id"], 10, 10, 120, 100, label)
    open_dashboard(page, server)
    page.select_option("#compare-labels", list(groups))
    page.select_option("#measure", "euclidean")
    page.fill("#permutations", "0")
    page.fill("#bootstrap", "40")
    page.click("#run-distances")
    _drawn(page, "distances-plot")
    # auto takes the measure's own interval: studentized for every measure.
    heads = page.eval_on_selector_all("#distances-table th", "hs => hs.map(h => h.textContent)")
    assert heads == [
        "pair",
        "euclidean",
        "p-value",
        "adjusted",
        "permutations",
        "95% studentized interval",
    ]
    tip = page.get_attribute("#distances-table th:last-child", "title")
    assert tip and tip.startswith("Bootstrap interval of the measure"), tip
    # The cells hold the ends only: the heading says how they were made.
    cell = page.inner_text("#distances-table tr:nth-child(2) td:last-child")
    low, high = (float(end) for end in cell.split(" – "))
    value = float(page.inner_text("#distances-table tr:nth-child(2) td:nth-child(2)"))
    # euclidean's interval is for the distance between the population means, built on the
    # bias-corrected square: with 4 mixed photos a side in 1280 dimensions it starts at 0
    assert 0 <= low < high and value > 0, (cell, value)


def test_job_tray_sits_under_the_buttons_without_covering_them(
    watched_page: tuple[Page, Any], server: str
) -> None:
    page, _ = watched_page
    held = {
        "id": "held-views",
        "kind": "separation",
        "state": "running",
        "progress": 0.3,
        "message": "block 2 of 6",
        "result": None,
        "error": None,
        "created_at": "2026-01-01T00:00:00",
        "finished_at": None,
    }
    page.route(
        "**/api/separation",
        lambda route: route.fulfill(status=202, json={"job_id": "held-views", "state": "queued"}),
    )
    page.route("**/api/jobs/held-views", lambda route: route.fulfill(json=held))
    page.route("**/api/labels", lambda route: route.fulfill(json=[]))
    open_dashboard(page, server)
    page.evaluate(
        "for (const l of ['a', 'b']) document.getElementById('compare-labels')"
        ".append(new Option(l, l, true, true))"
    )
    page.click("#run-separation")
    page.wait_for_selector("#job .job-row")
    assert page.locator("#run-separation").is_disabled()
    _wait_for(page, "document.getElementById('job').textContent.includes('block 2 of 6')")
    assert page.evaluate("getComputedStyle(document.getElementById('job')).position") == "static"
    page.locator("#job").scroll_into_view_if_needed()
    for button in ("run-distances", "run-separation", "run-embedding"):
        on_top = page.evaluate(
            """(id) => { const b = document.getElementById(id).getBoundingClientRect();
            return document.elementFromPoint(b.x + b.width / 2, b.y + b.height / 2).id; }""",
            button,
        )
        assert on_top == button
    with page.expect_request(lambda r: r.method == "DELETE" and r.url.endswith("/held-views")):
        page.click("#job .job-cancel")
    page.wait_for_selector("#job", state="hidden")
    assert page.locator("#run-separation").is_enabled()
    assert page.locator("#analysis-error").inner_text() == ""
