// Distance matrix between labels, with p-values when permutations are asked for.
import * as jobs from "../jobs.js";
import { $, fillTable } from "../ui.js";
import { drawFigure } from "./plot.js";

export async function showDistances(labels, c) {
  const body = { labels, model: c.model, layer: c.layer, measure: c.measure, descriptor: c.descriptor };
  if (c.permutations > 0) body.permutations = c.permutations;
  const result = await jobs.run("Distances", "/api/distances", body);
  $("distances-view").hidden = false;
  await drawFigure($("distances-plot"), result.figure, `distances-${c.measure}-${c.layer}`);
  const names = result.labels || labels;
  const rows = [];
  names.forEach((a, i) => names.forEach((b, j) => {
    if (j <= i) return;
    rows.push([`${a} – ${b}`, result.matrix[i][j], result.p_values ? result.p_values[i][j] : ""]);
  }));
  fillTable($("distances-table"), ["pair", c.measure, "p-value"], rows);
  return result;
}
