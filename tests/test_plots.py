"""Figures: JSON-safe, values where the dashboard expects them, overlay on the image grid."""

from __future__ import annotations

import base64
import json
import math
from typing import Any

import numpy as np
import pytest
import torch

from app import plots


def _dumps(fig: dict[str, Any]) -> str:
    return json.dumps(fig, allow_nan=False)


def _typed(array: dict[str, str]) -> np.ndarray[Any, Any]:
    shape = tuple(int(v) for v in array["shape"].split(","))
    return np.frombuffer(base64.b64decode(array["bdata"]), dtype=array["dtype"]).reshape(shape)


def test_to_json_safe_turns_numpy_and_nan_into_plain_values() -> None:
    nest = {
        "a": np.arange(3),
        "b": (np.float32(1.5), float("nan"), float("inf")),
        1: [np.int64(7), {"c": np.array([[np.nan, 2.0]])}],
    }
    safe = plots.to_json_safe(nest)
    assert safe == {"a": [0, 1, 2], "b": [1.5, None, None], "1": [7, {"c": [[None, 2.0]]}]}
    _dumps(safe)


@pytest.mark.parametrize(("height", "width"), [(3, 5), (300, 257), (1001, 77)])
def test_downsample_map_keeps_block_means(height: int, width: int) -> None:
    rng = np.random.default_rng(height * width)
    full = rng.random((height, width))
    small = plots.downsample_map(full, max_side=256)
    assert max(small.shape) <= 256
    if max(height, width) <= 256:
        np.testing.assert_array_equal(small, full)
        return
    # Independent reference: adaptive pooling's cell i covers [floor(i·H/h), ceil((i+1)·H/h)).
    h, w = small.shape
    for i in (0, h // 2, h - 1):
        for j in (0, w - 1):
            r0, r1 = (i * height) // h, -((-(i + 1) * height) // h)
            c0, c1 = (j * width) // w, -((-(j + 1) * width) // w)
            assert small[i, j] == pytest.approx(full[r0:r1, c0:c1].mean(), rel=1e-12)


def test_downsample_map_rejects_bad_maps() -> None:
    with pytest.raises(ValueError, match="H×W"):
        plots.downsample_map(np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match="max_side"):
        plots.downsample_map(np.zeros((2, 2)), max_side=0)


def test_heatmap_figure_overlays_the_map_on_image_pixels() -> None:
    height, width = 600, 403
    values = torch.rand(height, width, generator=torch.Generator().manual_seed(0))
    boxes = [
        {
            "id": 4,
            "x": 10.5,
            "y": 20,
            "w": 100,
            "h": 50,
            "label": "cat",
            "scores": {"energy": 0.25, "auc": float("nan")},
        },
        {"x": 200, "y": 300, "w": 30, "h": 40, "label": "dog"},
    ]
    fig = plots.heatmap_figure(
        values,
        boxes,
        image_url="/api/images/3/file",
        opacity=0.4,
        colorbar_title="gradcam <b>(min-max)</b>",
    )
    text = _dumps(fig)
    assert len(text) < 2_000_000
    heat = fig["data"][0]
    assert heat["colorbar"]["title"]["text"] == "gradcam &lt;b&gt;(min-max)&lt;/b&gt;"
    assert heat["type"] == "heatmap" and heat["opacity"] == 0.4
    assert heat["z"]["dtype"] == "f4"
    z = _typed(heat["z"])
    assert max(z.shape) <= plots.MAX_OVERLAY_SIDE
    # Cell centres span exactly the image: first at half a cell, last at W − half a cell.
    assert heat["x0"] == pytest.approx(heat["dx"] / 2)
    assert heat["x0"] + (z.shape[1] - 1) * heat["dx"] == pytest.approx(width - heat["dx"] / 2)
    assert heat["y0"] + (z.shape[0] - 1) * heat["dy"] == pytest.approx(height - heat["dy"] / 2)
    assert z.mean() == pytest.approx(float(values.double().mean()), rel=1e-3)
    shapes = fig["layout"]["shapes"]
    assert [(s["x0"], s["y0"], s["x1"], s["y1"]) for s in shapes] == [
        (10.5, 20.0, 110.5, 70.0),
        (200.0, 300.0, 230.0, 340.0),
    ]
    captions = [a["text"] for a in fig["layout"]["annotations"]]
    assert captions == ["#4 cat · energy 0.25", "dog"]
    assert "auc: n/a" in fig["data"][1]["hovertext"]
    image = fig["layout"]["images"][0]
    assert image["source"] == "/api/images/3/file"
    assert (image["sizex"], image["sizey"]) == (width, height)
    assert fig["layout"]["yaxis"]["range"] == [height, 0]
    # Built by hand for speed: plotly's validating Figure must accept every property.
    import plotly.graph_objects as go

    checked = go.Figure(fig)
    assert len(checked.data) == 3 and len(checked.layout.shapes) == 2


def test_heatmap_figure_without_image_and_bad_opacity() -> None:
    fig = plots.heatmap_figure(np.ones((4, 6)))
    assert "images" not in fig["layout"]
    assert _typed(fig["data"][0]["z"]).shape == (4, 6)
    with pytest.raises(ValueError, match="opacity"):
        plots.heatmap_figure(np.ones((4, 6)), opacity=1.5)


@pytest.mark.parametrize("shape", [(5, 7), (300, 451), (257, 3)])
def test_an_overlay_map_draws_the_same_figure_as_the_map(shape: tuple[int, int]) -> None:
    values = torch.rand(shape, generator=torch.Generator().manual_seed(shape[0]))
    boxes = [{"id": 3, "x": 1, "y": 2, "w": 3, "h": 2, "label": "cat", "scores": {"energy": 0.5}}]
    overlay = plots.overlay_map(values)
    expected = plots.heatmap_figure(values, boxes, image_url="/i", title="t")
    for _ in range(2):  # kept and drawn again: the same figure each time
        assert plots.heatmap_figure(overlay, boxes, image_url="/i", title="t") == expected
    small = _typed(expected["data"][0]["z"])
    assert (overlay.height, overlay.width) == shape
    assert overlay.dy * small.shape[0] == pytest.approx(shape[0])


def test_distance_matrix_figure_annotates_values_and_p_values() -> None:
    labels = ["brick", "grass", "gravel"]
    values = np.array([[0.0, 2.5, 3.25], [2.5, 0.0, 1.0], [3.25, 1.0, math.nan]])
    p = np.array([[1.0, 0.001, 0.02], [0.001, 1.0, 0.5], [0.02, 0.5, 1.0]])
    fig = plots.distance_matrix_figure(labels, values, p, measure="mmd")
    _dumps(fig)
    trace = fig["data"][0]
    assert trace["x"] == labels and trace["y"] == labels
    assert trace["z"][0][1] == 2.5 and trace["z"][2][2] is None
    assert trace["text"][0][2] == "3.25<br>p=0.02"
    assert trace["text"][2][2].startswith("n/a")
    assert trace["customdata"][1][2] == 0.5
    assert "p = " in trace["hovertemplate"]
    assert "farther apart" in fig["layout"]["title"]["text"]
    bare = plots.distance_matrix_figure(
        labels[:2], values[:2, :2], measure="cosine", higher_is_better=True
    )
    assert "p = " not in bare["data"][0]["hovertemplate"]
    assert bare["data"][0]["reversescale"] is True
    with pytest.raises(ValueError, match="does not match"):
        plots.distance_matrix_figure(labels, values[:2])


def _plotly_distance_matrix(
    labels: list[str], values: np.ndarray, p: np.ndarray | None, measure: str, higher: bool
) -> dict[str, object]:
    """The figure as plotly's validating ``Figure`` builds it: the reference the plain-dict
    ``distance_matrix_figure`` must equal key for key."""
    import plotly.graph_objects as go

    k = len(labels)
    text = [
        [
            plots._format_value(float(values[i, j]))
            + ("" if p is None or not math.isfinite(p[i, j]) else f"<br>p={p[i, j]:.3g}")
            for j in range(k)
        ]
        for i in range(k)
    ]
    names = [plots.plain_text(label) for label in labels]
    shown = plots.plain_text(measure)
    hover = (
        f"{shown or 'value'}(%{{y}}, %{{x}}) = %{{z:.4g}}"
        + ("" if p is None else "<br>p = %{customdata:.3g}")
        + "<extra></extra>"
    )
    fig = go.Figure(
        go.Heatmap(
            z=values.tolist(),
            x=names,
            y=names,
            text=text,
            texttemplate="%{text}",
            customdata=(values * np.nan if p is None else p).tolist(),
            hovertemplate=hover,
            colorscale="Viridis",
            reversescale=higher,
            colorbar={"title": {"text": shown}},
        )
    )
    direction = "higher = more alike" if higher else "higher = farther apart"
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(
        title=f"{shown} between groups ({direction})", margin={"l": 60, "r": 10, "t": 50, "b": 60}
    )
    reference: dict[str, object] = plots.to_json_safe(fig.to_plotly_json())
    return reference


@pytest.mark.parametrize("k", [1, 2, 5])
@pytest.mark.parametrize("with_p", [False, True])
def test_distance_matrix_figure_equals_plotlys_own_figure(k: int, with_p: bool) -> None:
    rng = np.random.default_rng(k)
    values = rng.random((k, k)) * 10.0 ** rng.integers(-6, 6, (k, k))
    values[0, -1] = math.nan
    p = rng.random((k, k)) if with_p else None
    if p is not None:
        p[-1, 0] = math.nan
    labels = [f"g<{i}>&" for i in range(k)]
    for measure, higher in (("mmd<b>", False), ("", True)):
        fig = plots.distance_matrix_figure(
            labels, values, p, measure=measure, higher_is_better=higher
        )
        expected = _plotly_distance_matrix(labels, values, p, measure, higher)
        assert json.dumps(fig) == json.dumps(expected)  # same values, same key order
        fig["layout"]["template"]["data"] = {}  # each answer owns its template
        again = plots.distance_matrix_figure(labels, values, p, measure=measure)
        assert again["layout"]["template"] == expected["layout"]["template"]  # type: ignore[index]


def test_separation_figure_has_two_aligned_panels_ratio_over_silhouette() -> None:
    layers = ["blocks.1", "blocks.3", "conv_head"]
    fig = plots.separation_figure(
        layers,
        [1.0, 2.0, 3.0],
        [2.0, 5.0, 9.0],
        [2.0, 2.5, 3.0],
        measure="euclidean",
        silhouette=[0.1, None, 0.4],
    )
    _dumps(fig)
    ratio, silhouette = fig["data"]
    assert (ratio["name"], silhouette["name"]) == ("inter / intra", "silhouette")
    assert ratio["y"] == [2.0, 2.5, 3.0] and silhouette["y"] == [0.1, None, 0.4]
    assert ratio["customdata"] == [[1.0, 2.0], [2.0, 5.0], [3.0, 9.0]]  # intra, inter in hover
    # Two panels over one layer axis: the ratio's y above the silhouette's, not overlaid.
    layout = fig["layout"]
    assert (ratio["yaxis"], silhouette["yaxis"]) == ("y", "y2")
    assert layout["yaxis"]["domain"][0] > layout["yaxis2"]["domain"][1]
    assert "overlaying" not in layout["yaxis2"] and layout["xaxis"]["matches"] == "x2"
    assert layout["yaxis2"]["range"] == [-1.05, 1.05]
    # Reference lines: ratio 1 (no separation) and silhouette 0 (no structure).
    assert [(sh["yref"], sh["y0"]) for sh in layout["shapes"]] == [("y", 1), ("y2", 0)]
    alone = plots.separation_figure(layers, [1, 2, 3], [2, 5, 9], [2, 2.5, 3])
    assert [t["name"] for t in alone["data"]] == ["inter / intra"]
    assert "yaxis2" not in alone["layout"]
    with pytest.raises(ValueError, match="inter has 2 values"):
        plots.separation_figure(layers, [1, 2, 3], [1, 2], [1, 2, 3])


def _floats(typed: Any) -> list[float]:
    assert typed["dtype"] == "f4"
    return np.frombuffer(base64.b64decode(typed["bdata"]), "<f4").astype(float).tolist()


def test_embedding_figure_is_webgl_coloured_by_label_with_ids_in_customdata() -> None:
    points = [
        {"box_id": 1, "image_id": 9, "label": "b", "x": 0.5, "y": 1.0},
        {"box_id": 2, "image_id": 9, "label": "a", "x": np.float32(2.0), "y": -1.0},
        {"box_id": 3, "image_id": 8, "label": "b", "x": 3.0, "y": 0.0},
    ]
    fig = plots.embedding_figure(points, method="pca")
    _dumps(fig)
    assert [t["name"] for t in fig["data"]] == ["a", "b"]
    assert {t["type"] for t in fig["data"]} == {"scattergl"}
    assert fig["data"][1]["customdata"] == [[1, 9], [3, 8]]
    assert _floats(fig["data"][1]["x"]) == [0.5, 3.0]
    assert _floats(fig["data"][1]["y"]) == [1.0, 0.0]
    assert fig["data"][0]["marker"]["color"] != fig["data"][1]["marker"]["color"]
    assert fig["layout"]["xaxis"]["title"]["text"] == "PC1"


def test_embedding_figure_takes_the_stores_colours_and_keeps_raw_labels() -> None:
    from app.palette import label_colours

    points = [
        {"box_id": i, "image_id": 1, "label": label, "x": float(i), "y": math.nan}
        for i, label in enumerate(["<b>x</b>", "dog", "dog"])
    ]
    colours = label_colours(["ant", "dog", "<b>x</b>", "zebra"])
    fig = plots.embedding_figure(points, colours=colours)
    _dumps(fig)
    by_name = {t["name"]: t for t in fig["data"]}
    assert by_name["dog"]["marker"]["color"] == colours["dog"]
    assert by_name["&lt;b&gt;x&lt;/b&gt;"]["marker"]["color"] == colours["<b>x</b>"]
    assert by_name["dog"]["y"] == [None, None]  # a NaN is a gap, not a typed array
    with pytest.raises(ValueError, match="no colour for labels"):
        plots.embedding_figure(points, colours={"dog": "#000000"})


def test_embedding_figure_of_50000_points_is_small() -> None:
    rng = np.random.default_rng(3)
    points = [
        {
            "box_id": i + 1,
            "image_id": i // 5 + 1,
            "label": f"c{i % 12}",
            "x": float(x),
            "y": float(y),
        }
        for i, (x, y) in enumerate(rng.normal(size=(50_000, 2)))
    ]
    fig = plots.embedding_figure(points)
    text = _dumps(fig)
    assert len(text) < 2_000_000
    shown = sorted(
        (x, y) for t in fig["data"] for x, y in zip(_floats(t["x"]), _floats(t["y"]), strict=True)
    )
    expected = sorted((float(np.float32(p["x"])), float(np.float32(p["y"]))) for p in points)
    assert shown == expected


def test_heatmap_boxes_take_their_labels_colours() -> None:
    from app.palette import label_colours

    boxes = [
        {"x": 1, "y": 1, "w": 3, "h": 2, "label": "dog"},
        {"x": 2, "y": 0, "w": 2, "h": 2, "label": "cat"},
        {"x": 0, "y": 3, "w": 2, "h": 1, "label": "dog"},
        {"x": 0, "y": 0, "w": 1, "h": 1, "label": "new"},
    ]
    colours = label_colours(["ant", "cat", "dog"])
    fig = plots.heatmap_figure(np.zeros((5, 6)), boxes, colours=colours)
    lines = [shape["line"]["color"] for shape in fig["layout"]["shapes"]]
    assert lines == [colours["dog"], colours["cat"], colours["dog"], "#7f7f7f"]
    assert [a["bgcolor"] for a in fig["layout"]["annotations"]] == lines
    alone = plots.heatmap_figure(np.zeros((5, 6)), boxes)
    assert [s["line"]["color"] for s in alone["layout"]["shapes"]] == [
        label_colours(["dog", "cat", "new"])[b["label"]] for b in boxes
    ]


def test_stored_figures_are_repainted_with_the_current_colours_without_being_changed() -> None:
    import copy

    from app.palette import label_colours

    boxes = [
        {"x": 1, "y": 1, "w": 3, "h": 2, "label": "dog"},
        {"x": 2, "y": 0, "w": 2, "h": 2, "label": "cat"},
    ]
    old = plots.heatmap_figure(np.zeros((5, 6)), boxes, colours=label_colours(["cat", "dog"]))
    kept = copy.deepcopy(old)
    now = label_colours(["ant", "cat", "dog"])  # a new label moves cat's and dog's ranks
    assert now["dog"] != label_colours(["cat", "dog"])["dog"]
    painted = plots.heatmap_with_colours(old, ["dog", "cat"], now)
    assert painted == plots.heatmap_figure(np.zeros((5, 6)), boxes, colours=now)
    assert old == kept  # a cached figure is not changed under the cache
    with pytest.raises(ValueError, match="1 label"):
        plots.heatmap_with_colours(old, ["dog"], now)
    points = [
        {"x": 0.0, "y": 1.0, "label": "dog", "box_id": 1, "image_id": 1},
        {"x": 2.0, "y": 3.0, "label": "cat", "box_id": 2, "image_id": 1},
    ]
    scatter = plots.embedding_figure(points)
    kept = copy.deepcopy(scatter)
    repainted = plots.embedding_with_colours(scatter, ["cat", "dog"], now)
    assert repainted == plots.embedding_figure(points, colours=now) and scatter == kept
