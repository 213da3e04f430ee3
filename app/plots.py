"""Pure functions: analysis results → Plotly figure dicts the dashboard renders as they are.

Every function returns ``fig.to_plotly_json()``'s shape (``{"data": [...], "layout": {...}}``)
passed through :func:`to_json_safe`, so the dict holds only plain Python values: no numpy,
no NaN or Inf (they become ``None``, which Plotly draws as a gap), and it survives
``json.dumps(..., allow_nan=False)`` as Starlette's JSON responses require. Values are plain
lists, except the overlay heat map's ``z``: a float32 Plotly typed array
(``{"dtype": "f4", "bdata": base64, "shape": "h, w"}``, which plotly.js ≥ 2.28 reads), a
third of the size of the same numbers as JSON text.

Plotly renders the text of titles, tick labels, legend names, annotations and hover boxes
as a small HTML dialect (``<a href>``, ``<span style>``, ``<br>``, …). Every piece of text
that comes from users or files (labels, layer and model names, titles) goes through
:func:`plain_text`, which escapes it so ``<a href=...>`` shows as those characters instead
of becoming a link; Plotly turns the entities back into the characters on screen.

Images stay out of the figures: the heat-map overlay names the image by URL
(``/api/images/{id}/file``) as a layout image, so a figure is a few hundred kB at most. The
overlay heat map is block-averaged to at most :data:`MAX_OVERLAY_SIDE` pixels on the long
side and placed on the image's pixel grid; the scores beside it use the full-size map.
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import plotly.graph_objects as go
import torch
import torch.nn.functional as F
from numpy.typing import ArrayLike

from app.palette import label_colours

__all__ = [
    "MAX_OVERLAY_SIDE",
    "OverlayMap",
    "distance_matrix_figure",
    "downsample_map",
    "embedding_figure",
    "embedding_with_colours",
    "heatmap_figure",
    "heatmap_with_colours",
    "overlay_map",
    "plain_text",
    "separation_figure",
    "to_json_safe",
]

MAX_OVERLAY_SIDE = 256
"""Longest side, in cells, of the heat map drawn over the image."""

_NO_LABEL_COLOUR = "#7f7f7f"  # a box whose label the colours passed in do not know


def to_json_safe(value: Any) -> Any:
    """Turn numpy arrays and scalars into lists and numbers, NaN/Inf into ``None``.

    Args:
        value: a nest of dicts, lists, tuples, numpy values and plain values.

    Returns:
        The same nest built only from ``dict``, ``list``, ``str``, ``int``, ``float``,
        ``bool`` and ``None``.
    """
    if isinstance(value, Mapping):
        return {str(k): to_json_safe(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return to_json_safe(value.tolist())
    if isinstance(value, str):
        return value
    if isinstance(value, list | tuple):
        return [to_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        return to_json_safe(value.item())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return value


def plain_text(value: object) -> str:
    """Text that Plotly shows as it is: ``<``, ``>`` and ``&`` escaped as HTML entities.

    Args:
        value: a label, name or title (anything, turned into ``str``).

    Returns:
        The escaped text; distinct inputs stay distinct.
    """
    return html.escape(str(value), quote=False)


def _figure(fig: go.Figure) -> dict[str, Any]:
    result: dict[str, Any] = to_json_safe(fig.to_plotly_json())
    return result


def downsample_map(
    values: ArrayLike | torch.Tensor, max_side: int = MAX_OVERLAY_SIDE
) -> np.ndarray[Any, np.dtype[np.float64]]:
    """Block-average an ``H×W`` map so its longer side is at most ``max_side``.

    Area averaging (``adaptive_avg_pool2d``) keeps each cell's mean, so the overlay shows the
    same mass as the full map. A map already small enough comes back unchanged (as float64).

    Raises:
        ValueError: the map is not 2-D or empty, or ``max_side`` < 1.
    """
    if max_side < 1:
        raise ValueError(f"max_side must be at least 1, got {max_side}")
    t = (
        values.detach().cpu()
        if isinstance(values, torch.Tensor)
        else torch.as_tensor(np.asarray(values))
    )
    t = t.to(torch.float64)
    if t.dim() != 2 or t.numel() == 0:
        raise ValueError(f"expected a non-empty H×W map, got shape {tuple(t.shape)}")
    height, width = t.shape
    scale = max(height, width) / max_side
    if scale <= 1:
        return t.numpy()
    size = (max(1, round(height / scale)), max(1, round(width / scale)))
    return F.adaptive_avg_pool2d(t[None, None], size)[0, 0].numpy()


@dataclass(frozen=True)
class OverlayMap:
    """A map as the overlay draws it: block-averaged (:func:`downsample_map`) to a float32
    Plotly typed array, on the grid of the ``height×width`` image it covers, each cell
    ``dy×dx`` image pixels. Made by :func:`overlay_map`; keep one to draw the same map again
    (after a box moved) without redoing it."""

    z: Mapping[str, str]
    height: int
    width: int
    dy: float
    dx: float


def overlay_map(values: ArrayLike | torch.Tensor) -> OverlayMap:
    """The ``H×W`` map (raw or normalised) as :func:`heatmap_figure` draws it.

    Raises:
        ValueError: the map is not 2-D or empty.
    """
    full = values.detach().cpu() if isinstance(values, torch.Tensor) else np.asarray(values)
    small = downsample_map(full)
    height, width = int(full.shape[0]), int(full.shape[1])
    z = small.astype(np.float32)
    typed = {
        "dtype": "f4",
        "bdata": base64.b64encode(z.tobytes()).decode(),
        "shape": f"{z.shape[0]}, {z.shape[1]}",
    }
    return OverlayMap(typed, height, width, height / small.shape[0], width / small.shape[1])


def heatmap_figure(
    values: ArrayLike | torch.Tensor | OverlayMap,
    boxes: Sequence[Mapping[str, Any]] = (),
    *,
    image_url: str | None = None,
    opacity: float = 0.5,
    title: str = "",
    colorscale: str = "Jet",
    colours: Mapping[str, str] | None = None,
    colorbar_title: str = "",
) -> dict[str, Any]:
    """The heat map over its image, with the boxes drawn, labelled and scored.

    Args:
        values: the ``H×W`` map at image size (raw or normalised), or
            :func:`overlay_map`'s of it; drawn block-averaged to at most
            :data:`MAX_OVERLAY_SIDE` on the long side, each cell spanning its image pixels,
            so axes read in image pixels (``y`` down).
        boxes: dicts with ``x, y, w, h`` and optionally ``id``, ``label`` and ``scores``
            (``{name: value}``), shown on the box and in its hover text.
        image_url: where the browser loads the image (a layout image under the map);
            ``None`` draws the map alone.
        opacity: the heat map's opacity over the image, in ``[0, 1]``.
        title: the figure's title.
        colorscale: a Plotly colour scale name.
        colours: ``{label: colour}`` for the boxes, normally
            :func:`app.palette.label_colours` over every label of the store (the colours the
            editor and the scatter use); by default the colours of the labels shown.
        colorbar_title: what the colours show (the method and the display scaling), along
            the colour bar.

    Returns:
        A JSON-safe Plotly figure dict; box ``i`` is ``layout.shapes[i]``,
        ``layout.annotations[i]`` and ``data[1 + i]``, coloured by
        :func:`heatmap_with_colours` (which repaints a stored figure).

    Raises:
        ValueError: a bad map or an opacity outside ``[0, 1]``.
    """
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must lie in [0, 1], got {opacity}")
    drawn = values if isinstance(values, OverlayMap) else overlay_map(values)
    height, width, dy, dx = drawn.height, drawn.width, drawn.dy, drawn.dx
    # Built as plain dicts: plotly's validating Figure costs ~80 ms here, most of a request.
    data: list[dict[str, Any]] = [
        {
            "type": "heatmap",
            "name": "heat map",
            "colorscale": colorscale,
            "opacity": opacity,
            "z": dict(drawn.z),
            "x0": dx / 2,
            "dx": dx,
            "y0": dy / 2,
            "dy": dy,
            "hovertemplate": "x %{x:.0f}, y %{y:.0f}: %{z:.4g}<extra></extra>",
            "colorbar": {"title": {"text": plain_text(colorbar_title), "side": "right"}},
        }
    ]
    shapes: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for box in boxes:
        x0, y0 = float(box["x"]), float(box["y"])
        x1, y1 = x0 + float(box["w"]), y0 + float(box["h"])
        scores: Mapping[str, float | None] = box.get("scores") or {}
        name = plain_text(box.get("label", ""))
        if box.get("id") is not None:
            name = f"#{box['id']} {name}".strip()
        shapes.append(
            {
                "type": "rect",
                "x0": x0,
                "y0": y0,
                "x1": x1,
                "y1": y1,
                "xref": "x",
                "yref": "y",
                "line": {"width": 2},
            }
        )
        energy = scores.get("energy")
        caption = name if energy is None else f"{name} · energy {energy:.2f}"
        annotations.append(
            {
                "x": x0,
                "y": y0,
                "text": caption,
                "showarrow": False,
                "xanchor": "left",
                "yanchor": "bottom",
                "font": {"color": "white", "size": 11},
            }
        )
        hover = "<br>".join(
            [name]
            + [
                f"{k}: {'n/a' if v is None or not math.isfinite(v) else f'{v:.3f}'}"
                for k, v in scores.items()
            ]
        )
        # An invisible trace along the box outline carries the hover text.
        data.append(
            {
                "type": "scatter",
                "x": [x0, x1, x1, x0, x0],
                "y": [y0, y0, y1, y1, y0],
                "mode": "lines",
                "line": {"width": 0},
                "hoverinfo": "text",
                "hovertext": hover,
                "name": name,
                "showlegend": False,
                "customdata": [box.get("id")] * 5,
            }
        )
    layout: dict[str, Any] = {
        "title": {"text": plain_text(title)},
        "margin": {"l": 10, "r": 10, "t": 40, "b": 10},
        "plot_bgcolor": "white",
        "shapes": shapes,
        "annotations": annotations,
        "xaxis": {"range": [0, width], "showgrid": False, "constrain": "domain"},
        "yaxis": {
            "range": [height, 0],
            "showgrid": False,
            "scaleanchor": "x",
            "constrain": "domain",
        },
    }
    if image_url is not None:
        layout["images"] = [
            {
                "source": image_url,
                "xref": "x",
                "yref": "y",
                "x": 0,
                "y": 0,
                "sizex": width,
                "sizey": height,
                "sizing": "stretch",
                "layer": "below",
                "xanchor": "left",
                "yanchor": "top",
            }
        ]
    labels = [str(box.get("label", "")) for box in boxes]
    figure: dict[str, Any] = to_json_safe({"data": data, "layout": layout})
    return heatmap_with_colours(
        figure, labels, colours if colours is not None else label_colours(labels)
    )


def heatmap_with_colours(
    figure: Mapping[str, Any], labels: Sequence[str], colours: Mapping[str, str]
) -> dict[str, Any]:
    """A copy of a :func:`heatmap_figure` with its boxes drawn in their labels' colours.

    Label colours change when labels are added or renamed (:mod:`app.palette`), so an answer
    kept in a cache stores its figure without them and gets the current ones here, when it
    is served; the input is left as it is.

    Args:
        figure: a :func:`heatmap_figure`.
        labels: each box's label, in the figure's box order.
        colours: ``{label: colour}``; a label it lacks is drawn grey.

    Raises:
        ValueError: ``labels`` does not have one label per box of the figure.
    """
    layout = dict(figure["layout"])
    shapes, annotations = list(layout["shapes"]), list(layout["annotations"])
    data = list(figure["data"])
    if not len(labels) == len(shapes) == len(annotations) == len(data) - 1:
        raise ValueError(
            f"{len(labels)} label(s) for a figure of {len(shapes)} box(es); give each box's label"
        )
    for i, label in enumerate(labels):
        colour = colours.get(label, _NO_LABEL_COLOUR)
        shapes[i] = {**shapes[i], "line": {**shapes[i]["line"], "color": colour}}
        annotations[i] = {**annotations[i], "bgcolor": colour}
        data[1 + i] = {**data[1 + i], "line": {**data[1 + i]["line"], "color": colour}}
    layout["shapes"], layout["annotations"] = shapes, annotations
    return {**figure, "data": data, "layout": layout}


def _format_value(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.3g}"


def distance_matrix_figure(
    labels: Sequence[str],
    values: ArrayLike,
    p_values: ArrayLike | None = None,
    *,
    measure: str = "",
    higher_is_better: bool = False,
) -> dict[str, Any]:
    """A measure between every pair of groups as an annotated heat map.

    Args:
        labels: the groups' names, in the matrix's order.
        values: the ``k×k`` matrix (NaN where undefined).
        p_values: permutation-test p-values of the same shape, shown in each cell and its
            hover; ``None`` when no test ran.
        measure: the measure's name (axis title, hover).
        higher_is_better: the measure's direction, stated in the title so the colours read
            the right way.

    Returns:
        A JSON-safe Plotly figure dict.

    Raises:
        ValueError: shapes that don't match the labels.
    """
    matrix = np.asarray(values, dtype=np.float64)
    k = len(labels)
    if matrix.shape != (k, k):
        raise ValueError(f"matrix shape {matrix.shape} does not match {k} labels")
    pv = None if p_values is None else np.asarray(p_values, dtype=np.float64)
    if pv is not None and pv.shape != (k, k):
        raise ValueError(f"p-value shape {pv.shape} does not match {k} labels")
    text = [
        [
            _format_value(float(matrix[i, j]))
            + ("" if pv is None or not math.isfinite(pv[i, j]) else f"<br>p={pv[i, j]:.3g}")
            for j in range(k)
        ]
        for i in range(k)
    ]
    custom = matrix * np.nan if pv is None else pv
    names = [plain_text(label) for label in labels]
    measure = plain_text(measure)
    hover = (
        f"{measure or 'value'}(%{{y}}, %{{x}}) = %{{z:.4g}}"
        + ("" if pv is None else "<br>p = %{customdata:.3g}")
        + "<extra></extra>"
    )
    direction = "higher = more alike" if higher_is_better else "higher = farther apart"
    # Built as plain dicts (plotly's validating Figure cost ~15 ms, most of a distances
    # answer): the same dict, key for key, as go.Figure(go.Heatmap(...)).to_plotly_json()
    # with the default template, which tests/test_plots.py checks against plotly itself.
    data = to_json_safe(
        {
            "colorbar": {"title": {"text": measure}},
            "colorscale": _plotly_defaults().viridis,
            "customdata": custom.tolist(),
            "hovertemplate": hover,
            "reversescale": higher_is_better,
            "text": text,
            "texttemplate": "%{text}",
            "x": names,
            "y": names,
            "z": matrix.tolist(),
            "type": "heatmap",
        }
    )
    layout = {
        "template": _plotly_defaults().template(),
        "yaxis": {"autorange": "reversed"},
        "margin": {"l": 60, "r": 10, "t": 50, "b": 60},
        "title": {"text": f"{measure} between groups ({direction})"},
    }
    return {"data": [data], "layout": layout}


@dataclass(frozen=True)
class _PlotlyDefaults:
    """What a plotly ``Figure`` adds on its own, taken from plotly once per process."""

    template_json: str
    viridis: list[list[Any]]

    def template(self) -> dict[str, Any]:
        """A fresh copy of the default layout template (callers may change theirs)."""
        copy: dict[str, Any] = json.loads(self.template_json)
        return copy


@lru_cache(maxsize=1)
def _plotly_defaults() -> _PlotlyDefaults:
    layout = to_json_safe(go.Figure().to_plotly_json())["layout"]
    viridis = to_json_safe(go.Heatmap(colorscale="Viridis").to_plotly_json())["colorscale"]
    return _PlotlyDefaults(json.dumps(layout.get("template", {})), viridis)


def separation_figure(
    layers: Sequence[str],
    intra: Sequence[float],
    inter: Sequence[float],
    ratio: Sequence[float],
    *,
    measure: str = "",
    silhouette: Sequence[float | None] | None = None,
) -> dict[str, Any]:
    """The separation per layer as two aligned panels over one layer axis.

    The top panel is ``inter / intra`` (above 1: groups lie farther apart than their members
    do; higher separates better), each point's hover giving its intra- and inter-group
    distance; the bottom panel is the silhouette, on its own fixed ``[−1, 1]`` axis (0: no
    structure). Two panels rather than two y-axes on one plot: the ratio and the
    silhouette have different units and ranges, and one plot with two axes made each read
    against the other's ticks.

    Args:
        layers: layer names, in network order (the shared x axis).
        intra: mean distance within groups per layer (hover).
        inter: mean distance between groups per layer (hover).
        ratio: ``inter / intra`` per layer.
        measure: the measure's name (title).
        silhouette: silhouette per layer (``None`` where undefined); no bottom panel without.

    Returns:
        A JSON-safe Plotly figure dict.

    Raises:
        ValueError: sequences of different lengths.
    """
    n = len(layers)
    series = {"intra": intra, "inter": inter, "ratio": ratio}
    if silhouette is not None:
        series["silhouette"] = [math.nan if v is None else v for v in silhouette]
    for name, seq in series.items():
        if len(seq) != n:
            raise ValueError(f"{name} has {len(seq)} values for {n} layers")
    x = [plain_text(layer) for layer in layers]
    measure = plain_text(measure)
    split = silhouette is not None
    data: list[dict[str, Any]] = [
        {
            "type": "scatter",
            "mode": "lines+markers",
            "name": "inter / intra",
            "x": x,
            "y": list(ratio),
            "xaxis": "x",
            "yaxis": "y",
            "customdata": [[a, b] for a, b in zip(intra, inter, strict=True)],
            "hovertemplate": (
                "%{x}<br>inter / intra = %{y:.3g}<br>intra %{customdata[0]:.3g} · "
                "inter %{customdata[1]:.3g}<extra></extra>"
            ),
        }
    ]
    line = {"type": "line", "xref": "x domain", "x0": 0, "x1": 1, "line": {"dash": "dot"}}
    shapes: list[dict[str, Any]] = [{**line, "yref": "y", "y0": 1, "y1": 1}]
    layout: dict[str, Any] = {
        "title": {"text": f"Separation by layer ({measure})" if measure else "Separation by layer"},
        "showlegend": False,
        "hovermode": "x unified" if split else "closest",
        "margin": {"l": 80, "r": 20, "t": 50, "b": 90},
        "xaxis": {"anchor": "y", "title": {"text": "" if split else "layer"}},
        "yaxis": {
            "domain": [0.55, 1.0] if split else [0.0, 1.0],
            "title": {"text": "inter / intra<br>(higher separates)"},
            "rangemode": "tozero",
        },
        "shapes": shapes,
    }
    if split:
        data.append(
            {
                "type": "scatter",
                "mode": "lines+markers",
                "name": "silhouette",
                "x": x,
                "y": list(series["silhouette"]),
                "xaxis": "x2",
                "yaxis": "y2",
                "line": {"color": "#d62728"},
                "hovertemplate": "%{x}<br>silhouette = %{y:.3f}<extra></extra>",
            }
        )
        layout["xaxis"].update({"matches": "x2", "showticklabels": False})
        layout["xaxis2"] = {"anchor": "y2", "title": {"text": "layer"}}
        layout["yaxis2"] = {
            "domain": [0.0, 0.45],
            "range": [-1.05, 1.05],
            "title": {"text": "silhouette<br>(higher separates)"},
        }
        shapes.append({**line, "xref": "x2 domain", "yref": "y2", "y0": 0, "y1": 0})
    result: dict[str, Any] = to_json_safe({"data": data, "layout": layout})
    return result


def embedding_figure(
    points: Sequence[Mapping[str, Any]],
    *,
    method: str = "tsne",
    title: str = "",
    colours: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A WebGL (``scattergl``) scatter of boxes, one trace per label, ids in ``customdata``.

    Built as plain dicts with the coordinates as float32 typed arrays: 50,000 points make a
    figure of about 1 MB that Plotly draws with WebGL, where an SVG scatter of that size
    stalls the page for seconds.

    Args:
        points: dicts with ``x``, ``y``, ``label``, ``box_id`` and ``image_id``.
        method: ``tsne`` or ``pca`` (axis titles).
        title: the figure's title.
        colours: ``{label: colour}``, normally :func:`app.palette.label_colours` over every
            label of the store, so a label has the same colour here as in the editor and the
            heat map; by default the colours of the labels shown.

    Returns:
        A JSON-safe Plotly figure dict; each point's ``customdata`` is ``[box_id, image_id]``
        (for the hover thumbnail, the click and the lasso's crop gallery); each trace's
        ``name`` is its label escaped by :func:`plain_text`.
    """
    by_label: dict[str, list[Mapping[str, Any]]] = {}
    for point in points:
        by_label.setdefault(str(point["label"]), []).append(point)
    palette = dict(colours) if colours is not None else label_colours(by_label)
    missing = sorted(set(by_label) - set(palette))
    if missing:
        raise ValueError(
            f"no colour for labels {missing[:5]}; pass colours for every label "
            "shown (app.palette.label_colours over the store's labels)"
        )
    marker_size = 9 if len(points) <= 2000 else 6 if len(points) <= 20000 else 4
    data: list[dict[str, Any]] = []
    for label, members in sorted(by_label.items()):
        xy = np.array([[float(p["x"]), float(p["y"])] for p in members], dtype=np.float32)
        data.append(
            {
                "type": "scattergl",
                "mode": "markers",
                "name": plain_text(label),
                "x": _typed(xy[:, 0]),
                "y": _typed(xy[:, 1]),
                "marker": {"size": marker_size},
                "customdata": [[int(p["box_id"]), int(p["image_id"])] for p in members],
                # The label stays out of the template (a "%{x}" in it would be filled in): the
                # trace's name, escaped, is what the hover box's side shows.
                "hovertemplate": "box %{customdata[0]} · image %{customdata[1]}",
            }
        )
    axis = "PC" if method == "pca" else "t-SNE "
    layout = {
        "title": {"text": plain_text(title or f"{method.upper()} of box descriptors")},
        "xaxis": {"title": {"text": f"{axis}1"}},
        "yaxis": {"title": {"text": f"{axis}2"}},
        "margin": {"l": 50, "r": 10, "t": 50, "b": 50},
        "hovermode": "closest",
        "legend": {"itemsizing": "constant"},
        "uirevision": "embedding",
    }
    figure: dict[str, Any] = to_json_safe({"data": data, "layout": layout})
    return embedding_with_colours(figure, sorted(by_label), palette)


def embedding_with_colours(
    figure: Mapping[str, Any], labels: Sequence[str], colours: Mapping[str, str]
) -> dict[str, Any]:
    """A copy of an :func:`embedding_figure` with each label's points in its colour (the
    current palette for a cached answer, as :func:`heatmap_with_colours` does for boxes).

    Args:
        figure: an :func:`embedding_figure`.
        labels: the label of each trace: the distinct labels of its points, sorted.
        colours: ``{label: colour}``; a label it lacks is drawn grey.

    Raises:
        ValueError: ``labels`` does not have one label per trace.
    """
    data = list(figure["data"])
    if len(labels) != len(data):
        raise ValueError(f"{len(labels)} label(s) for {len(data)} trace(s); give each trace's")
    for i, label in enumerate(labels):
        marker = {**data[i]["marker"], "color": colours.get(label, _NO_LABEL_COLOUR)}
        data[i] = {**data[i], "marker": marker}
    return {**figure, "data": data}


def _typed(values: np.ndarray) -> dict[str, Any] | list[float | None]:
    """A float32 Plotly typed array, or a plain list when a value is not finite (→ gap)."""
    if not np.isfinite(values).all():
        return [float(v) if math.isfinite(v) else None for v in values.tolist()]
    return {"dtype": "f4", "bdata": base64.b64encode(values.astype("<f4").tobytes()).decode()}
