// t-SNE / PCA scatter of boxes (WebGL), coloured by label: search by label, hover shows the
// box, click opens its image, lasso or box selection lists the selected boxes as crops.
import { imageUrl } from "../api.js";
import * as jobs from "../jobs.js";
import { lazyImage, whenNear } from "../lazy.js";
import { labelColour } from "../palette.js";
import { part, showWarnings } from "../ui.js";
import { drawFigure } from "./plot.js";

const CROPS_PAGE = 60;
// Trace names are labels escaped for Plotly's HTML dialect (app.plots.plain_text).
const labelOf = (name) => name.replace(/&lt;/g, "<").replace(/&gt;/g, ">").replace(/&amp;/g, "&");
const crops = { root: null, boxes: [], shown: 0, rearm: null, onOpen: () => {} };

// Plotly's customdata carries [box_id, image_id] for each point.
function boxOf(point) {
  const [boxId, imageId] = Array.isArray(point.customdata) ? point.customdata : [];
  return boxId === undefined ? null : { box_id: boxId, image_id: imageId, label: labelOf(point.data.name) };
}

function cropItem(box) {
  const item = document.createElement("li");
  const button = Object.assign(document.createElement("button"), {
    type: "button", className: "crop", title: `box ${box.box_id} · ${box.label} · image ${box.image_id}`,
  });
  button.dataset.boxId = box.box_id;
  button.style.borderColor = labelColour(box.label);
  const img = Object.assign(document.createElement("img"), { alt: `box ${box.box_id} (${box.label})` });
  lazyImage(img, `/api/images/${box.image_id}/thumbnail?box_id=${box.box_id}&size=96`);
  button.append(img);
  button.addEventListener("click", () => crops.onOpen(box.image_id, { boxId: box.box_id }));
  item.append(button);
  return item;
}

function moreCrops() {
  const next = crops.boxes.slice(crops.shown, crops.shown + CROPS_PAGE);
  part(crops.root, "crop-list").append(...next.map(cropItem));
  crops.shown += next.length;
  crops.rearm?.(crops.shown < crops.boxes.length);
}

function showCrops(boxes) {
  crops.boxes = boxes;
  crops.shown = 0;
  part(crops.root, "crop-list").replaceChildren();
  part(crops.root, "crops").hidden = !boxes.length;
  const labels = new Set(boxes.map((b) => b.label));
  part(crops.root, "crops-title").textContent = `${boxes.length} selected box${boxes.length === 1 ? "" : "es"}`
    + ` (${labels.size} label${labels.size === 1 ? "" : "s"}) · click a crop to open its image`;
  crops.rearm ??= whenNear(part(crops.root, "crops-more"), moreCrops);
  moreCrops();
}

// Traces whose label contains the search text stay drawn; the others go to the legend only.
function search(root, plot) {
  const query = part(root, "search").value.trim().toLowerCase();
  const traces = plot.data || [];
  const visible = traces.map((t) => !query || labelOf(t.name).toLowerCase().includes(query) || "legendonly");
  window.Plotly.restyle(plot, { visible });
  const points = traces.reduce((n, t, i) => n + (visible[i] === true ? (t.customdata || []).length : 0), 0);
  part(root, "found").textContent = query ? `${points} box${points === 1 ? "" : "es"} match “${query}”` : "";
}

// The hover crop belongs to the scatter it came from: gone when the method changes or a new
// scatter is drawn.
export function clearHover(root) {
  part(root, "thumb").hidden = true;
  part(root, "thumb-img").removeAttribute("src");
  part(root, "thumb-caption").textContent = "";
}

// `root`: the view's element, holding its plot and the hover thumbnail's parts.
export async function showEmbedding(root, labels, c, { onOpen }) {
  // The scatter places one vector per box: a set of `pixels` rows has no single point.
  const descriptor = c.descriptor === "pixels" ? "gap" : c.descriptor;
  const body = { labels, model: c.model, layer: c.layer, method: c.embedMethod, descriptor, seed: 0 };
  if (c.embedMethod === "tsne" && c.perplexity !== null) body.perplexity = c.perplexity;
  const result = await jobs.run(c.embedMethod === "pca" ? "PCA" : "t-SNE", "/api/embeddings", body, c.tray);
  const arrived = performance.now();
  crops.onOpen = onOpen;
  crops.root = root;
  root.hidden = false;
  clearHover(root);
  showWarnings(part(root, "warnings"), c.descriptor === "pixels"
    ? ["The scatter needs one vector per box: it uses gap (the box's mean) where pixels was picked."] : []);
  const name = result.method === "pca" ? "PCA" : `t-SNE (perplexity ${result.perplexity === null ? "auto" : Number(result.perplexity.toPrecision(3))})`;
  const escape = (text) => text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
  result.figure.layout = {
    ...result.figure.layout,
    title: { text: `${escape(`${name} of ${result.points.length} boxes`)}<br><sub>${escape(`${result.descriptor} descriptors at ${result.layer} · ${result.model}`)}</sub>`, x: 0.02, xanchor: "left" },
  };
  showCrops([]);
  const plot = part(root, "plot");
  delete plot.dataset.drawMs;
  // The page's colours win over those the answer was made with (it may be a cached one).
  for (const trace of result.figure.data || []) {
    trace.marker = { ...trace.marker, color: labelColour(labelOf(trace.name), trace.marker?.color) };
  }
  part(root, "search").value = "";
  part(root, "found").textContent = "";
  part(root, "labels").replaceChildren(...(result.figure.data || []).map((t) => new Option(labelOf(t.name))));
  await drawFigure(plot, result.figure, `embedding-${c.embedMethod}-${c.layer}`);
  await new Promise((resolve) => requestAnimationFrame(() => resolve()));
  plot.dataset.drawMs = (performance.now() - arrived).toFixed(0);
  plot.dataset.points = String(result.points.length);
  plot.removeAllListeners?.("plotly_hover");
  plot.removeAllListeners?.("plotly_click");
  plot.removeAllListeners?.("plotly_selected");
  plot.removeAllListeners?.("plotly_deselect");
  plot.on("plotly_hover", async (event) => {
    const box = boxOf(event.points[0]);
    if (!box) return;
    part(root, "thumb").hidden = false;
    part(root, "thumb-caption").textContent = `box ${box.box_id} · ${box.label} · image ${box.image_id}`;
    part(root, "thumb-img").src = await imageUrl(`/api/images/${box.image_id}/thumbnail?box_id=${box.box_id}`);
  });
  plot.on("plotly_click", (event) => {
    const box = boxOf(event.points[0]);
    if (box) onOpen(box.image_id, { boxId: box.box_id });
  });
  plot.on("plotly_selected", (event) => showCrops((event?.points || []).map(boxOf).filter(Boolean)));
  plot.on("plotly_deselect", () => showCrops([]));
  part(root, "search").oninput = () => search(root, plot);
  return result;
}
