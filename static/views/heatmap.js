// Heat-map view: the API's overlay figure, an opacity slider and the per-box scores.
import { blob, download, imageUrl } from "../api.js";
import * as jobs from "../jobs.js";
import { fillTable, guarded, part, showWarnings } from "../ui.js";
import { drawFigure } from "./plot.js";

// The request of the heat map on screen: its CSV comes from the server, which guards
// spreadsheet formulas in labels (a CSV built here would write "=HYPERLINK(...)" raw).
let shown = null;

// `root`: the view's element, holding its opacity, caption, warnings, plot, table, csv and
// error parts.
export function initHeatmapView(root) {
  const opacity = part(root, "opacity");
  opacity.addEventListener("input", () => {
    const plot = part(root, "plot");
    if (!plot.data) return;
    const indices = plot.data.map((t, i) => (t.type === "heatmap" ? i : -1)).filter((i) => i >= 0);
    if (indices.length) window.Plotly.restyle(plot, { opacity: Number(opacity.value) }, indices);
  });
  part(root, "csv").addEventListener("click", () => guarded(part(root, "error"), async () => {
    if (!shown) return;
    download("featuregap-scores.csv", await blob("/api/heatmaps/scores.csv", shown));
  }));
}

function scoreTable(result) {
  const names = result.score_names || [];
  const columns = ["box", "label", "x", "y", "w", "h", ...names];
  const rows = result.boxes.map((b) => [b.id, b.label, b.x, b.y, b.w, b.h, ...names.map((n) => b.scores[n])]);
  return { columns, rows };
}

// The figure's image is an API path; load it with the token, as an object URL.
async function withLocalImages(figure) {
  const images = await Promise.all((figure.layout?.images || []).map(async (img) => (
    typeof img.source === "string" && img.source.startsWith("/api/") ? { ...img, source: await imageUrl(img.source) } : img
  )));
  return { ...figure, layout: { ...figure.layout, images } };
}

export async function showHeatmap(root, image, c) {
  const body = { image_id: image.id, model: c.model, layer: c.layer, method: c.method };
  if (c.target !== null) body.target = c.target;
  const result = await jobs.run("Heat map", "/api/heatmaps", body);
  shown = body;
  root.hidden = false;
  showWarnings(part(root, "warnings"), result.warnings);
  const top = result.prediction?.[0];
  part(root, "caption").textContent = `${result.method} on ${result.layer}, explaining ` +
    `${result.target_label ?? result.target ?? "the top class"}` +
    (top ? ` · top prediction: ${top.label} (${(100 * top.probability).toFixed(1)}%)` : "");
  await drawFigure(part(root, "plot"), await withLocalImages(result.figure), `heatmap-${image.id}-${c.layer}`);
  part(root, "opacity").dispatchEvent(new Event("input"));
  const table = scoreTable(result);
  fillTable(part(root, "table"), table.columns, table.rows);
  return result;
}
