// Separation profile: intra/inter distances, their ratio and silhouette across layers.
import * as jobs from "../jobs.js";
import { $, fillTable } from "../ui.js";
import { drawFigure } from "./plot.js";

export async function showSeparation(labels, c) {
  const body = { labels, model: c.model, layers: c.profileLayers, measure: c.measure, descriptor: c.descriptor };
  const result = await jobs.run("Layer profile", "/api/separation", body);
  $("separation-view").hidden = false;
  await drawFigure($("separation-plot"), result.figure, `separation-${c.measure}`);
  fillTable($("separation-table"), ["layer", "intra", "inter", "inter / intra", "silhouette"],
    result.layers.map((l) => [l.layer, l.intra, l.inter, l.ratio, l.silhouette]));
  return result;
}
