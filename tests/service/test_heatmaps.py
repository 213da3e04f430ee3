"""Heat maps of stored images: a pool caller's cancel stops Score-CAM between its batches;
a moved box is rescored from the map kept in memory exactly as from a fresh one."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from app.config import get_settings
from app.engine.models import LoadedModel
from app.jobs import JobRunner
from app.service import heatmaps
from app.service.heatmaps import HeatmapRequest, raw_heatmap
from app.store import Store


@pytest.mark.slow
def test_cancelling_the_pool_call_stops_scorecam(
    data_dir: Path, embedded_model: LoadedModel, photo: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store(get_settings())
    runner = JobRunner(store, workers=1)
    image, _ = store.add_image(photo.png("chelsea"), "chelsea.png")
    request = HeatmapRequest("efficientnet_lite0", "bn2", "scorecam")
    started, proceed, asked = threading.Event(), threading.Event(), []
    compute = heatmaps.compute_heatmap

    def watched(*args: Any, **kwargs: Any) -> Any:
        cancelled = kwargs["cancelled"]

        def ask() -> bool:  # the pool's own check, seen from Score-CAM's loop
            asked.append(1)
            answer = bool(cancelled())
            if len(asked) == 1:  # hold the first batch until the caller has cancelled
                started.set()
                proceed.wait(60)
            return answer

        return compute(*args, **{**kwargs, "cancelled": ask})

    monkeypatch.setattr(heatmaps, "compute_heatmap", watched)
    try:
        future, cancel = runner.call(lambda _: raw_heatmap(store, embedded_model, image, request))
        assert started.wait(60)
        cancel.set()
        proceed.set()
        with pytest.raises(InterruptedError, match="cancelled"):
            future.result(timeout=60)
        # 64 channels in batches of 8: asked before each batch, stopped at the second ask
        assert len(asked) == 2
        # outside the pool nothing cancels it, and the full map is computed
        heat = raw_heatmap(store, embedded_model, image, request)
        assert heat.values.shape == (image.height, image.width) and len(asked) == 2 + 8
    finally:
        runner.shutdown()
        store.close()


@pytest.mark.slow
def test_a_moved_box_is_scored_and_drawn_from_the_kept_map_as_from_a_fresh_one(
    data_dir: Path, embedded_model: LoadedModel, photo: Any
) -> None:
    store = Store(get_settings())
    try:
        image, _ = store.add_image(photo.png("chelsea"), "chelsea.png")
        box = store.add_box(image.id, 140, 20, 180, 210, "cat")
        store.add_box(image.id, 0, 0, 60, 60, "corner")
        answers = {}
        for x in (100.5, 37.25):  # each move: a new answer from the map kept in memory
            store.update_box(box.id, x=x)
            for how in ("minmax", "percentile", "none"):
                request = HeatmapRequest(
                    "efficientnet_lite0", "conv_head", "gradcam", normalise=how
                )
                boxes = store.boxes(image_id=image.id)
                answers[x, how] = heatmaps.heatmap_result(
                    store, embedded_model, image, request, boxes
                )
        heatmaps._MAPS.clear()
        heatmaps._VIEWS.clear()
        for (x, how), kept in answers.items():  # as a fresh process computes them
            store.update_box(box.id, x=x)
            request = HeatmapRequest("efficientnet_lite0", "conv_head", "gradcam", normalise=how)
            fresh = heatmaps._heatmap_answer(
                store, embedded_model, image, request, store.boxes(image_id=image.id)
            )
            heatmaps._VIEWS.clear()
            assert kept == fresh
        assert answers[100.5, "minmax"]["boxes"] != answers[37.25, "minmax"]["boxes"]
    finally:
        store.close()


@pytest.mark.slow
def test_a_cached_heat_map_takes_the_labels_current_colours(
    data_dir: Path, embedded_model: LoadedModel, photo: Any
) -> None:
    from app.palette import label_colours
    from app.service.heatmaps import heatmap_result

    store = Store(get_settings())
    image, _ = store.add_image(photo.png("chelsea"), "chelsea.png")
    store.add_boxes(image.id, [(10, 10, 80, 60, "dog"), (100, 50, 60, 90, "cat")])
    request = HeatmapRequest("efficientnet_lite0", "bn2", "l2")

    def drawn() -> list[str]:
        boxes = store.boxes(image_id=image.id)
        figure = heatmap_result(store, embedded_model, image, request, boxes)["figure"]
        lines = [s["line"]["color"] for s in figure["layout"]["shapes"]]
        assert [a["bgcolor"] for a in figure["layout"]["annotations"]] == lines
        assert [t["line"]["color"] for t in figure["data"][1:]] == lines
        return lines

    before = label_colours(["cat", "dog"])
    assert drawn() == [before["dog"], before["cat"]]
    count = store.count_results(image.id)
    # A label "ant" on another image leaves this image's answer cached, but moves "cat" and
    # "dog" down the palette: the served figure must show their colours now.
    other, _ = store.add_image(photo.png("coffee"), "coffee.png")
    store.add_box(other.id, 0, 0, 20, 20, "ant")
    now = label_colours(["ant", "cat", "dog"])
    assert drawn() == [now["dog"], now["cat"]] != [before["dog"], before["cat"]]
    assert store.count_results(image.id) == count  # served from the cache
    store.close()
