// Heat-map views: the API's overlay figure with its opacity, a titled colour bar and the
// per-box scores; and the comparison grid (several methods or layers of one image side by
// side, each with its boxes' scores under it).
import { blob, download, imageUrl } from "../api.js";
import { explainColumn, explainMethod } from "../glossary.js";
import * as jobs from "../jobs.js";
import { fillTable, guarded, part, showWarnings } from "../ui.js";
import { drawFigure } from "./plot.js";

// The request of the heat map on screen: its CSV comes from the server, which guards
// spreadsheet formulas in labels (a CSV built here would write "=HYPERLINK(...)" raw).
let shown = null;
const GRID_MAX = 12;

// `root`: the view's element, holding its caption, warnings, plot, table, csv and error
// parts; `opacity`: the panel's slider, applied to this view and every grid cell.
export function initHeatmapView(root, opacity, grid) {
  opacity.addEventListener("input", () => {
    for (const plot of [part(root, "plot"), ...grid.querySelectorAll(".plot")]) setOpacity(plot, Number(opacity.value));
  });
  part(root, "csv").addEventListener("click", () => guarded(part(root, "error"), async () => {
    if (!shown) return;
    download("featuregap-scores.csv", await blob("/api/heatmaps/scores.csv", shown));
  }));
}

function setOpacity(plot, value) {
  if (!plot.data) return;
  const indices = plot.data.map((t, i) => (t.type === "heatmap" ? i : -1)).filter((i) => i >= 0);
  if (indices.length) window.Plotly.restyle(plot, { opacity: value }, indices);
}

export function scoreTable(result, geometry = true) {
  const names = result.score_names || [];
  const columns = geometry ? ["box", "label", "x", "y", "w", "h", ...names] : ["box", "label", ...names];
  const rows = result.boxes.map((b) => (geometry
    ? [b.id, b.label, b.x, b.y, b.w, b.h, ...names.map((n) => b.scores[n])]
    : [b.id, b.label, ...names.map((n) => b.scores[n])]));
  return { columns, rows };
}

// The figure's image is an API path; load it with the token, as an object URL.
export async function withLocalImages(figure) {
  const images = await Promise.all((figure.layout?.images || []).map(async (img) => (
    typeof img.source === "string" && img.source.startsWith("/api/") ? { ...img, source: await imageUrl(img.source) } : img
  )));
  return { ...figure, layout: { ...figure.layout, images } };
}

// What the map shows, in words: the method, its layer, and the class it explains (or that
// it explains none: a channel reduction shows the layer's activity, not a class).
function describe(result, h) {
  const channels = result.method === "scorecam" && h.options?.max_channels ? ` (${h.options.max_channels} channels)` : "";
  const what = result.method === "channel" ? `channel ${h.channel} of ${result.layer}` : `${result.method} on ${result.layer}${channels}`;
  if (result.target === null || result.target === undefined) return `${what} (no class: a reduction of the layer's channels)`;
  const name = result.target_label ?? `class ${result.target}`;
  return `${what}, explaining ${name} (${result.target})${h.target === null ? ", the top prediction" : ""}`;
}

// The figure as the API drew it (its colour bar titled with the method and the scaling), at
// the panel's opacity.
function atOpacity(figure, result, h) {
  const data = (figure.data || []).map((t) => (t.type === "heatmap" ? { ...t, opacity: h.opacity } : t));
  return { ...figure, data };
}

function body(image, h) {
  const request = { image_id: image.id, model: h.model, layer: h.layer, method: h.method, normalise: h.normalise, mode: h.mode };
  if (h.target !== null) request.target = h.target;
  if (h.channel !== null) request.channel = h.channel;
  if (h.options) request.options = h.options;
  return request;
}

// A failed run leaves no stale map behind: the view is emptied and hidden, and the error
// (thrown on) is shown by the caller beside its button.
function clear(root) {
  window.Plotly.purge(part(root, "plot"));
  part(root, "caption").textContent = "";
  part(root, "table").replaceChildren();
  showWarnings(part(root, "warnings"), []);
  root.hidden = true;
  shown = null;
}

export async function showHeatmap(root, image, h, tray) {
  const request = body(image, h);
  let result;
  try {
    result = await jobs.run("Heat map", "/api/heatmaps", request, tray);
  } catch (err) {
    clear(root);
    throw err;
  }
  shown = request;
  root.hidden = false;
  showWarnings(part(root, "warnings"), result.warnings);
  const top = result.prediction?.[0];
  part(root, "caption").textContent = describe(result, h)
    + (top ? ` · top prediction: ${top.label} (${(100 * top.probability).toFixed(1)}%)` : "");
  part(root, "caption").title = explainMethod(result.method);
  await drawFigure(part(root, "plot"), atOpacity(await withLocalImages(result.figure), result, h), `heatmap-${image.id}-${h.layer}`);
  const table = scoreTable(result);
  fillTable(part(root, "table"), table.columns, table.rows, (c) => explainColumn(c));
  return result;
}

function cell(h) {
  const item = Object.assign(document.createElement("li"), { className: "heat-cell" });
  const title = Object.assign(document.createElement("h4"), { textContent: `${h.method} · ${h.layer}`, title: explainMethod(h.method) });
  const caption = Object.assign(document.createElement("p"), { className: "muted cell-caption" });
  const plot = Object.assign(document.createElement("div"), { className: "plot cell-plot" });
  const error = Object.assign(document.createElement("p"), { className: "error", role: "alert" });
  const table = Object.assign(document.createElement("table"), { className: "scores" });
  item.append(title, caption, plot, error, table);
  return { item, caption, plot, error, table };
}

// One request per cell, one after another (the server runs one model pass at a time anyway),
// each cell filled as its answer arrives; a failing cell shows its own error. Cancel stops
// the run: the cell it was computing and those after it say so, with no plot.
export async function showGrid(root, image, cells, tray) {
  if (cells.length > GRID_MAX) {
    throw new Error(`${cells.length} combinations: pick at most ${GRID_MAX} (methods × layers)`);
  }
  const list = part(root, "cells");
  for (const plot of list.querySelectorAll(".plot")) window.Plotly.purge(plot);
  const parts = cells.map(cell);
  list.replaceChildren(...parts.map((p) => p.item));
  part(root, "summary").textContent = `${cells.length} heat map${cells.length === 1 ? "" : "s"} of ${image.filename || `image ${image.id}`}`;
  root.hidden = false;
  const results = [];
  for (const [i, h] of cells.entries()) {
    const p = parts[i];
    try {
      const result = await jobs.run(`Heat map ${i + 1}/${cells.length}`, "/api/heatmaps", body(image, h), tray);
      p.caption.textContent = describe(result, h);
      const figure = atOpacity(await withLocalImages(result.figure), result, h);
      // A small multiple: no axes' ticks, a slim colour bar, the title above the cell.
      const quiet = { showticklabels: false, ticks: "" };
      figure.layout = {
        ...figure.layout, title: { text: "" }, margin: { l: 2, r: 2, t: 2, b: 2 },
        xaxis: { ...figure.layout.xaxis, ...quiet }, yaxis: { ...figure.layout.yaxis, ...quiet },
      };
      figure.data = figure.data.map((t) => (t.type === "heatmap" ? { ...t, colorbar: { ...t.colorbar, thickness: 10 } } : t));
      await drawFigure(p.plot, figure, `heatmap-${image.id}-${h.method}-${h.layer}`);
      const table = scoreTable(result, false);
      fillTable(p.table, table.columns, table.rows, (c) => explainColumn(c));
      results.push(result);
    } catch (err) {
      if (err.name === "AbortError") {
        for (const rest of parts.slice(i)) {
          window.Plotly.purge(rest.plot);
          rest.plot.remove();
          rest.error.textContent = rest === p ? "cancelled" : "not run: cancelled";
        }
        throw err;
      }
      p.error.textContent = err.message || String(err);
      p.plot.remove();
      results.push(null);
    }
  }
  return results;
}

export function clearGrid(root) {
  for (const plot of part(root, "cells").querySelectorAll(".plot")) window.Plotly.purge(plot);
  part(root, "cells").replaceChildren();
  root.hidden = true;
}
