// Separation profile: intra/inter distances, their ratio and silhouette across layers.
import * as jobs from "../jobs.js";
import { fillTable, part } from "../ui.js";
import { drawFigure } from "./plot.js";

// `root`: the view's element, holding its plot and table parts.
export async function showSeparation(root, labels, c) {
  const body = { labels, model: c.model, layers: c.profileLayers, measure: c.measure, descriptor: c.descriptor };
  const result = await jobs.run("Layer profile", "/api/separation", body);
  root.hidden = false;
  await drawFigure(part(root, "plot"), result.figure, `separation-${c.measure}`);
  fillTable(part(root, "table"), ["layer", "intra", "inter", "inter / intra", "silhouette"],
    result.layers.map((l) => [l.layer, l.intra, l.inter, l.ratio, l.silhouette]));
  return result;
}
