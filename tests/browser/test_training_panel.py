"""The training panel in headless Chromium: a fine-tune started from the page on texture
photos, its loss curve growing live, the new model in the model lists, "what moved" with the
numbers of ``POST /api/trainings/moved``, and a second run cancelled from the page. With
``FEATUREGAP_DOC_SCREENSHOTS=1`` it also writes the README's screenshots of "what moved".

Each texture photo is cut into quadrant images with four boxes each; the panel holds out
one image per texture. Crops of 128 px and six short epochs (24 steps) keep the run to
seconds, long enough to see the curve grow at the page's polling rate.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from functools import partial
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.browser.helpers import wait_for

Page = Any
_wait_for = partial(wait_for, timeout=120.0)  # this file's default wait
TEXTURES = ("brick", "grass", "gravel")
LABELS = [f"tp-{name}" for name in TEXTURES]  # labels no other browser test uses
CORNERS = ((0, 0), (0, 256), (256, 0))  # three 256-px quadrants of each photo
STARTS = (16, 144)  # 2×2 boxes of 96 px in each quadrant

_CURVE_POINTS = "document.getElementById('training-loss').data?.[0]?.x?.length ?? 0"


@pytest.fixture
def textures(server: str, photo: Any) -> Iterator[dict[int, str]]:
    """Nine quadrant images with four boxes each, {image id: label}; deleted afterwards, so
    the tests after this one find the shared server's store as it was."""
    images = _upload_textures(server, photo)
    yield images
    for image_id in images:
        assert httpx.delete(f"{server}/api/images/{image_id}").status_code == 204


def _upload_textures(origin: str, photo: Any) -> dict[int, str]:
    images = {}
    for name, label in zip(TEXTURES, LABELS, strict=True):
        full = photo(name)
        for k, (y, x) in enumerate(CORNERS):
            pixels = full[y : y + 256, x : x + 256].copy()
            pixels[0, 0] = (7, 7, 7)  # bytes of its own: no other test's upload of the photo
            buffer = io.BytesIO()
            Image.fromarray(pixels).save(buffer, format="PNG")
            files = {"file": (f"{label}-{k}.png", buffer.getvalue(), "image/png")}
            image = httpx.post(f"{origin}/api/images", files=files)
            assert image.status_code in (200, 201), image.text
            image_id = image.json()["id"]
            images[image_id] = label
            for sy in STARTS:
                for sx in STARTS:
                    box = {"x": sx, "y": sy, "w": 96, "h": 96, "label": label}
                    answer = httpx.post(f"{origin}/api/images/{image_id}/boxes", json=box)
                    assert answer.status_code == 201, answer.text
    return images


def _fill(page: Page, name: str, epochs: int) -> None:
    page.select_option("#train-layer", "bn2")
    page.fill("#train-labels", ", ".join(LABELS))
    page.fill("#train-epochs", str(epochs))
    page.fill("#train-lr", "0.0003")
    page.fill("#train-batch", "6")
    page.fill("#train-crop", "128")
    page.fill("#train-holdout", "0.33")
    page.fill("#train-permutations", "200")
    page.fill("#train-name", name)


def _start(page: Page) -> dict[str, Any]:
    """Click Train; the API's acceptance (job id, split) as the page received it."""
    with page.expect_response(
        lambda r: r.url.endswith("/api/trainings") and r.request.method == "POST"
    ) as accepted:
        page.click("#run-training")
    assert accepted.value.status == 202, accepted.value.text()
    answer: dict[str, Any] = accepted.value.json()
    return answer


def _cells(page: Page, table: str) -> list[list[str]]:
    rows: list[list[str]] = page.evaluate(
        "(id) => [...document.getElementById(id).querySelectorAll('tr')].slice(1)"
        ".map((tr) => [...tr.children].map((td) => td.textContent))",
        table,
    )
    return rows


def _shown(page: Page, values: list[Any]) -> list[str]:
    """The values as the page's tables print them (ui.js: 4 significant digits)."""
    shown: list[str] = page.evaluate(
        "(vs) => vs.map((v) => (typeof v === 'number' ? (Number.isInteger(v) ? String(v)"
        " : v.toPrecision(4)) : v ?? ''))",
        values,
    )
    return shown


def _scatter(page: Page, plot_id: str) -> list[dict[str, Any]]:
    """Every drawn point of a scatter (Plotly's decoded arrays) with its box id."""
    points: list[dict[str, Any]] = page.evaluate(
        """(id) => document.getElementById(id)._fullData.flatMap((t) =>
             Array.from(t.x, (x, i) => ({ box_id: t.customdata[i][0], x, y: t.y[i] })))""",
        plot_id,
    )
    return points


def _models(origin: str) -> list[str]:
    return [m["name"] for m in httpx.get(f"{origin}/api/models").json()]


def test_training_panel_live_curve_new_model_what_moved_and_cancel(
    watched_page: tuple[Page, Any],
    server: str,
    textures: dict[int, str],
    shot: Any,
    doc_shot: Any,
) -> None:
    page, _ = watched_page
    page.goto(server + "/")
    page.wait_for_selector("body[data-ready='1']")
    page.wait_for_selector("#training-panel[data-ready='1']")
    offered = page.eval_on_selector_all("#compare-labels option", "os => os.map(o => o.text)")
    assert "tp-brick (12 boxes on 3 images)" in offered
    # The layer offered first is the last one with a spatial extent, as the server's default.
    assert page.input_value("#train-layer") == "bn2"
    # Six epochs (24 steps): long enough that the page's 0.4 s polls see the curve grow even
    # on a quiet machine, where two epochs could end between two polls.
    epochs = 6
    _fill(page, "tp-tuned", epochs=epochs)
    accepted = _start(page)
    assert accepted["model"] == "tp-tuned"
    assert (accepted["train_boxes"], accepted["held_out_boxes"]) == (24, 12)

    # The curve grows while the job runs: at least two partial curves drawn.
    seen = set()
    deadline = time.monotonic() + 120
    while True:
        points = page.evaluate(_CURVE_POINTS)
        state = httpx.get(f"{server}/api/trainings/{accepted['job_id']}").json()["state"]
        if state != "running" and state != "queued":
            break
        if points:
            seen.add(points)
        assert time.monotonic() < deadline, "the training did not end"
        time.sleep(0.05)
    assert state == "done"
    steps = epochs * 24 // 6
    growing = sorted(n for n in seen if n < steps)
    assert len(growing) >= 2, f"the loss curve did not grow while training ran: {sorted(seen)}"
    _wait_for(page, f"{_CURVE_POINTS} === {steps}")
    curve = httpx.get(f"{server}/api/trainings/{accepted['job_id']}").json()["curve"]
    drawn = page.evaluate("document.getElementById('training-loss').data[0].y")
    assert drawn == [p["loss"] for p in curve]

    # The new model is in both model lists.
    _wait_for(
        page, "[...document.getElementById('model').options].some(o => o.value === 'tp-tuned')"
    )
    assert "tp-tuned" in page.eval_on_selector_all(
        "#train-model option", "os => os.map(o => o.value)"
    )
    assert "tp-tuned" in _models(server)

    # What moved: the page's numbers are the API's.
    _wait_for(page, "document.getElementById('training-status').textContent.includes('below')")
    shot(page, "what-moved")
    assert page.text_content("#training-error") == ""
    moved = httpx.post(
        f"{server}/api/trainings/moved",
        json={"job_id": accepted["job_id"], "permutations": 200},
        timeout=300,
    ).json()
    assert (moved["before"], moved["after"]) == ("efficientnet_lite0", "tp-tuned")
    rows = _cells(page, "training-moved-table")
    keys = ("ratio_before", "ratio_after", "silhouette_before", "silhouette_after")
    assert [r[0] for r in rows] == [r["layer"] for r in moved["layers"]]
    assert rows[-1][0] == "bn2"
    for row, want in zip(rows, moved["layers"], strict=True):
        assert row[1:] == _shown(page, [want[k] for k in keys])
    bn2 = moved["layers"][-1]
    assert bn2["ratio_after"] != bn2["ratio_before"]  # the trained layer moved
    traces = page.evaluate("document.getElementById('training-moved').data.map(t => t.name)")
    assert traces == [t["name"] for t in moved["figure"]["data"]]
    assert any(n.endswith("· efficientnet_lite0") for n in traces)
    assert any(n.endswith("· tp-tuned") for n in traces)

    # Both distance matrices, their values and p-values in the table.
    dist = moved["distances"]
    names = dist["after"]["labels"]
    assert names == sorted(LABELS)
    pairs = [(i, j) for i in range(3) for j in range(i + 1, 3)]
    rows = _cells(page, "training-matrix-table")
    assert [r[0] for r in rows] == [f"{names[i]} – {names[j]}" for i, j in pairs]
    for row, (i, j) in zip(rows, pairs, strict=True):
        want = [dist["before"]["matrix"][i][j], dist["after"]["matrix"][i][j]]
        for side in ("before", "after"):
            test = next(t for t in dist[side]["tests"] if (t["a"], t["b"]) == (names[i], names[j]))
            want.append(test["p_value"] if test["p_value"] is not None else "no test")
        assert row[1:] == _shown(page, want)
    for side in ("before", "after"):
        z = page.evaluate(f"document.getElementById('training-matrix-{side}').data[0].z")
        assert z == dist[side]["figure"]["data"][0]["z"]
    # One held-out image per texture: no test between labels, and the page says so.
    warnings = page.text_content("#training-matrix-warnings")
    assert warnings and all(w in warnings for w in dist["after"]["warnings"])

    # Both scatters: the held-out boxes at the API's coordinates.
    for side in ("before", "after"):
        drawn = {p["box_id"]: (p["x"], p["y"]) for p in _scatter(page, f"training-scatter-{side}")}
        want = {p["box_id"]: (p["x"], p["y"]) for p in moved["scatter"][side]["points"]}
        assert drawn.keys() == want.keys() and len(drawn) == 12
        for box_id, xy in want.items():
            assert drawn[box_id] == pytest.approx(xy, rel=1e-6, abs=1e-6)
    assert page.text_content("#training-scatter-title-after") == "tp-tuned (fine-tuned)"

    # The heat maps of one held-out image under both, the same class, the boxes' scores.
    heat = moved["heatmaps"]
    assert heat["image_id"] in {p["image_id"] for p in moved["scatter"]["after"]["points"]}
    assert textures[heat["image_id"]] in LABELS
    heading = page.text_content("#training-heat-heading")
    assert f"gradcam on bn2, explaining {heat['target_label']} ({heat['target']})" in heading
    for side in ("before", "after"):
        rows = _cells(page, f"training-heat-table-{side}")
        result = heat[side]
        assert [r[0] for r in rows] == [str(b["id"]) for b in result["boxes"]]
        for row, box in zip(rows, result["boxes"], strict=True):
            assert row[2:] == _shown(page, [box["scores"][n] for n in result["score_names"]])
        assert result["target"] == heat["target"]
    assert heat["before"]["boxes"] != heat["after"]["boxes"]
    images_drawn = page.evaluate(
        "['before', 'after'].map(s => document.getElementById('training-heat-' + s)"
        ".layout.images[0].source.startsWith('blob:'))"
    )
    assert images_drawn == [True, True]
    doc_shot(page, "training-loss", "#training-panel")
    doc_shot(page, "training-moved", "#training-moved-view")
    doc_shot(page, "training-compare", "#training-scatter-heading")

    # A second run, cancelled from the panel: it ends cancelled and leaves no model.
    _fill(page, "tp-cancel", epochs=100)
    second = _start(page)
    _wait_for(page, "document.getElementById('training-moved-view').hidden")
    _wait_for(page, f"{_CURVE_POINTS} >= 1")
    page.click("#cancel-training")
    _wait_for(page, "!document.getElementById('run-training').disabled")
    assert page.text_content("#training-status") == "cancelled: nothing was saved"
    assert httpx.get(f"{server}/api/trainings/{second['job_id']}").json()["state"] == "cancelled"
    assert "tp-cancel" not in _models(server)
    assert page.is_disabled("#cancel-training")
    assert page.text_content("#training-error") == ""
    assert page.is_hidden("#training-moved-view")
    shot(page, "cancelled")
