// Heat-map view: the API's overlay figure, an opacity slider and the per-box scores.
import { download } from "../api.js";
import * as jobs from "../jobs.js";
import { $, fillTable, toCsv } from "../ui.js";
import { drawFigure } from "./plot.js";

let table = { columns: [], rows: [] };

export function initHeatmapView() {
  $("heatmap-opacity").addEventListener("input", () => {
    const plot = $("heatmap-plot");
    if (!plot.data) return;
    const indices = plot.data.map((t, i) => (t.type === "heatmap" ? i : -1)).filter((i) => i >= 0);
    if (indices.length) window.Plotly.restyle(plot, { opacity: Number($("heatmap-opacity").value) }, indices);
  });
  $("scores-csv").addEventListener("click", () => {
    download("featuregap-scores.csv", toCsv(table.columns, table.rows), "text/csv");
  });
}

function scoreTable(scores) {
  const keys = [];
  for (const score of scores) for (const k of Object.keys(score)) if (!keys.includes(k)) keys.push(k);
  const first = ["box_id", "label"].filter((k) => keys.includes(k));
  const columns = [...first, ...keys.filter((k) => !first.includes(k) && typeof scores[0][k] !== "object")];
  return { columns, rows: scores.map((s) => columns.map((c) => s[c])) };
}

export async function showHeatmap(image, c) {
  const body = { image_id: image.id, model: c.model, layer: c.layer, method: c.method };
  if (c.target !== null) body.target = c.target;
  const result = await jobs.run("Heat map", "/api/heatmaps", body);
  $("heatmap-view").hidden = false;
  await drawFigure($("heatmap-plot"), result.figure, `heatmap-${image.id}-${c.layer}`);
  $("heatmap-opacity").dispatchEvent(new Event("input"));
  table = scoreTable(result.scores || result.boxes || []);
  fillTable($("heatmap-scores"), table.columns, table.rows);
  return result;
}
