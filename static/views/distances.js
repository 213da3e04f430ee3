// Distance matrix between labels, with unit-level tests and intervals when asked for.
import * as jobs from "../jobs.js";
import { fillTable, part, showWarnings } from "../ui.js";
import { drawFigure } from "./plot.js";

const interval = (t) => (t.interval ? `${t.interval.low.toPrecision(4)} – ${t.interval.high.toPrecision(4)}` : "");

// `root`: the view's element, holding its warnings, plot, note and table parts.
export async function showDistances(root, labels, c) {
  const body = { labels, model: c.model, layer: c.layer, measure: c.measure, descriptor: c.descriptor };
  if (c.permutations > 0) body.permutations = c.permutations;
  if (c.bootstrap > 0) body.bootstrap = c.bootstrap;
  const result = await jobs.run("Distances", "/api/distances", body);
  root.hidden = false;
  showWarnings(part(root, "warnings"), result.warnings);
  await drawFigure(part(root, "plot"), result.figure, `distances-${c.measure}-${c.layer}`);
  const tested = result.tests.length > 0;
  const groups = Object.entries(result.groups)
    .map(([name, g]) => `${name}: ${g.units} ${result.unit === "image" ? "images" : "boxes"}, effective size ${g.ess.toPrecision(3)}`)
    .join("; ");
  part(root, "note").textContent = tested
    ? `Tests exchange whole ${result.unit === "image" ? "images" : "boxes"}; p-values adjusted by ${result.adjustment.method === "holm" ? "Holm" : "Benjamini–Hochberg"} over ${result.adjustment.family}. ${groups}.`
    : groups;
  const names = result.labels || labels;
  const rows = [];
  names.forEach((a, i) => names.forEach((b, j) => {
    if (j <= i) return;
    const t = result.tests.find((x) => x.a === a && x.b === b);
    rows.push(tested
      ? [`${a} – ${b}`, result.matrix[i][j], result.permutations ? t.p_value ?? "no test" : "", t.p_adjusted ?? "", t.exact ? "exact" : t.permutations, interval(t)]
      : [`${a} – ${b}`, result.matrix[i][j]]);
  }));
  const columns = tested
    ? ["pair", c.measure, "p-value", "adjusted", "permutations", "95% interval"]
    : ["pair", c.measure];
  fillTable(part(root, "table"), columns, rows);
  return result;
}
