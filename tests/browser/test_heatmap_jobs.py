"""A long heat map from the page: an all-channel Score-CAM runs as a job whose progress the
tray shows batch by batch; Cancel stops it on the server, and the button comes back."""

from __future__ import annotations

import re
import time
from typing import Any

import httpx

from tests.browser.helpers import open_dashboard, open_image, post_box, post_image, wait_for

Page = Any
BATCH = re.compile(r"Score-CAM batch (\d+) of (\d+)")
TRAY_TEXT = "(document.querySelector('#image-jobs .job-text')?.textContent || '')"


def test_all_channel_scorecam_shows_batches_and_cancel_stops_the_job(
    watched_page: tuple[Page, Any], server: str, photo: Any
) -> None:
    page, _watch = watched_page
    image = post_image(server, "chelsea-scorecam", photo.png("chelsea"))
    post_box(server, image["id"], 140, 20, 180, 210, "cat")
    open_dashboard(page, server)
    open_image(page, "chelsea-scorecam.png")

    page.select_option("#method", "scorecam")
    page.select_option("#heat-layer", "bn2")
    assert page.locator("#scorecam-field").is_visible()
    assert page.locator("#scorecam-channels").input_value() == "64"
    assert page.locator("#scorecam-channels").get_attribute("max") == "512"  # bn2: 1,280
    page.check("#scorecam-all")
    assert page.locator("#scorecam-channels").is_disabled()
    with page.expect_response("**/api/heatmaps") as answered:
        page.click("#run-heatmap")
    response = answered.value
    assert response.request.post_data_json["options"] == {"max_channels": 512}
    assert response.status == 202, response.text()
    job_id = response.json()["job_id"]
    assert page.locator("#run-heatmap").is_disabled()
    assert page.locator("#run-grid").is_disabled()  # its neighbour starts the same kind

    # The tray's text follows the job: "Heat map: Score-CAM batch k of K", k rising.
    wait_for(page, f"/Score-CAM batch \\d+ of/.test({TRAY_TEXT})", timeout=120)
    first = BATCH.search(page.evaluate(TRAY_TEXT))
    assert first is not None
    wait_for(page, f"!{TRAY_TEXT}.includes('batch {first[1]} of')", timeout=60)
    later = BATCH.search(page.evaluate(TRAY_TEXT))
    assert later is not None and int(later[1]) > int(first[1]) and later[2] == first[2]
    bar = page.evaluate("document.querySelector('#image-jobs progress').value")
    assert 0 < bar < 0.9

    pressed = time.monotonic()
    page.click("#image-jobs .job-cancel")
    # The button stays disabled until the server has stopped the job, then comes back.
    wait_for(page, "!document.getElementById('run-heatmap').disabled", timeout=30)
    waited = time.monotonic() - pressed
    job = httpx.get(f"{server}/api/jobs/{job_id}").json()
    assert job["state"] == "cancelled" and job["result"] is None, job
    assert waited < 15
    assert not page.locator("#run-grid").is_disabled()
    assert page.locator("#image-jobs").is_hidden()  # its row went with it
    assert page.locator("#heatmap-view").is_hidden()  # no map, stale or half-made
    assert page.locator("#image-analysis-error").inner_text() == ""  # a cancel is no error
    # nothing runs on: the job's progress stays where the cancel left it
    stopped = job["progress"]
    time.sleep(1.0)
    assert httpx.get(f"{server}/api/jobs/{job_id}").json()["progress"] == stopped < 0.9


def test_a_cancelled_grid_keeps_the_cells_it_drew_and_marks_the_rest(
    watched_page: tuple[Page, Any], server: str, photo: Any
) -> None:
    page, _watch = watched_page
    image = post_image(server, "coffee-scorecam", photo.png("coffee"))
    post_box(server, image["id"], 100, 60, 200, 200, "cup")
    open_dashboard(page, server)
    open_image(page, "coffee-scorecam.png")
    page.select_option("#method", "gradcam")
    page.select_option("#heat-layer", "bn2")
    assert page.locator("#scorecam-field").is_hidden()
    page.click("#compare summary")
    # cells in the lists' order: mean, then Score-CAM, each at conv_head, then bn2
    page.select_option("#grid-methods", ["mean", "scorecam"])
    page.select_option("#grid-layers", ["conv_head", "bn2"])
    page.check("#scorecam-all")  # the grid's Score-CAM shows the field
    with page.expect_response(
        lambda r: r.url.endswith("/api/heatmaps") and r.status == 202
    ) as answered:
        page.click("#run-grid")
    assert answered.value.request.post_data_json["options"] == {"max_channels": 512}
    job_id = answered.value.json()["job_id"]
    assert page.locator("#run-grid").is_disabled() and page.locator("#run-heatmap").is_disabled()
    wait_for(page, f"/Score-CAM batch \\d+ of/.test({TRAY_TEXT})", timeout=120)
    page.click("#image-jobs .job-cancel")
    wait_for(page, "!document.getElementById('run-grid').disabled", timeout=30)
    assert httpx.get(f"{server}/api/jobs/{job_id}").json()["state"] == "cancelled"
    cells = page.locator("#heat-grid .heat-cell")
    titles = [cells.nth(i).locator("h4").inner_text() for i in range(cells.count())]
    assert titles == ["mean · conv_head", "mean · bn2", "scorecam · conv_head", "scorecam · bn2"]
    # the mean maps were drawn before the cancel and stay; Score-CAM's cell and the one
    # after it have no plot, and say why
    assert [cells.nth(i).locator(".js-plotly-plot").count() for i in range(4)] == [1, 1, 0, 0]
    assert [cells.nth(i).locator(".error").inner_text() for i in range(4)] == [
        "",
        "",
        "cancelled",
        "not run: cancelled",
    ]
    assert page.locator("#image-analysis-error").inner_text() == ""
