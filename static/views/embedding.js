// t-SNE / PCA scatter of boxes coloured by label: hover shows the box, click opens its image.
import { imageUrl } from "../api.js";
import * as jobs from "../jobs.js";
import { part } from "../ui.js";
import { drawFigure } from "./plot.js";

// Plotly's customdata carries [box_id, image_id] for each point.
function boxOf(point, result) {
  const [boxId, imageId] = Array.isArray(point.customdata) ? point.customdata : [point.customdata];
  const known = (result.points || []).find((p) => p.box_id === boxId) || {};
  return boxId === undefined ? null : { label: point.data.name, ...known, box_id: boxId, image_id: imageId ?? known.image_id };
}

// `root`: the view's element, holding its plot and the hover thumbnail's parts.
export async function showEmbedding(root, labels, c, { onOpen }) {
  const body = { labels, model: c.model, layer: c.layer, method: c.embedMethod, descriptor: c.descriptor, seed: 0 };
  const result = await jobs.run(c.embedMethod === "pca" ? "PCA" : "t-SNE", "/api/embeddings", body);
  root.hidden = false;
  const plot = part(root, "plot");
  await drawFigure(plot, result.figure, `embedding-${c.embedMethod}-${c.layer}`);
  plot.removeAllListeners?.("plotly_hover");
  plot.removeAllListeners?.("plotly_click");
  plot.on("plotly_hover", async (event) => {
    const box = boxOf(event.points[0], result);
    if (!box) return;
    part(root, "thumb").hidden = false;
    part(root, "thumb-caption").textContent = `box ${box.box_id} · ${box.label} · image ${box.image_id}`;
    part(root, "thumb-img").src = await imageUrl(`/api/images/${box.image_id}/thumbnail?box_id=${box.box_id}`);
  });
  plot.on("plotly_click", (event) => {
    const box = boxOf(event.points[0], result);
    if (box) onOpen(box.image_id);
  });
  return result;
}
