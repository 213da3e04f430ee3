// Distance matrix between labels, with unit-level tests and intervals when asked for; each
// label's group size on the axes, the measure's direction in words, tooltips on the table.
import { direction, explainColumn, explainMeasure } from "../glossary.js";
import * as jobs from "../jobs.js";
import { labelColour } from "../palette.js";
import { fillTable, part, showWarnings } from "../ui.js";
import { drawFigure } from "./plot.js";

const interval = (t) => (t.interval && t.interval.low !== null ? `${t.interval.low.toPrecision(4)} – ${t.interval.high.toPrecision(4)}` : "");
const METHODS = { bca: "BCa", percentile: "percentile" };
const INTERVAL = "95% interval"; // the glossary's entry for the interval column

// "95% BCa interval": the level and the method the API used (interval.method of each test;
// one method per answer, as interval_method resolves once per measure).
function intervalHeading(tests) {
  const given = tests.map((t) => t.interval).filter(Boolean);
  if (!given.length) return INTERVAL;
  const methods = [...new Set(given.map((i) => METHODS[i.method] || i.method))].join(" / ");
  return `${Math.round(given[0].level * 100)}% ${methods} interval`;
}
const plural = (n, one, many = `${one}s`) => `${n} ${n === 1 ? one : many}`;
const escape = (text) => text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");

// "■ brick<br>6 boxes, 1 image" for each label, as the axes' tick text, the square in the
// label's colour (the editor's, the heat map's, the scatter's). The figure's names are the
// labels escaped for Plotly (app.plots.plain_text): the rest is added the same way.
const swatch = (n) => `<span style="color:${labelColour(n)}">■</span> `;
function withSizes(figure, result, names) {
  const tick = names.map((n) => `${swatch(n)}${escape(n)}<br>${plural(result.sizes?.[n] ?? 0, "box", "boxes")}, ${plural(result.images?.[n] ?? 0, "image")}`);
  const values = names.map(escape);
  const axis = { tickmode: "array", tickvals: values, ticktext: tick };
  const layout = figure.layout || {};
  return { ...figure, layout: { ...layout, xaxis: { ...layout.xaxis, ...axis }, yaxis: { ...layout.yaxis, ...axis } } };
}

function groupNote(result) {
  const [one, many] = result.unit === "image" ? ["image", "images"] : ["box", "boxes"];
  return Object.entries(result.groups)
    .map(([name, g]) => `${name}: ${plural(g.units, one, many)}` + (g.ess === null ? "" : `, effective size ${g.ess.toPrecision(3)}`))
    .join("; ");
}

// The server names the family; with no p-value in the matrix there is nothing adjusted.
function adjustmentNote(result) {
  if (!result.tests.some((t) => t.p_value !== null)) return "no pair has enough units for a p-value.";
  const method = result.adjustment.method === "holm" ? "Holm" : "Benjamini–Hochberg";
  return `p-values adjusted by ${method} over ${result.adjustment.family}.`;
}

// `root`: the view's element, holding its warnings, plot, note and table parts.
export async function showDistances(root, labels, c) {
  const body = { labels, model: c.model, layer: c.layer, measure: c.measure, descriptor: c.descriptor };
  if (c.permutations > 0) body.permutations = c.permutations;
  if (c.bootstrap > 0) body.bootstrap = c.bootstrap;
  const result = await jobs.run("Distances", "/api/distances", body, c.tray);
  root.hidden = false;
  showWarnings(part(root, "warnings"), result.warnings);
  const names = result.labels || labels;
  await drawFigure(part(root, "plot"), withSizes(result.figure, result, names), `distances-${c.measure}-${c.layer}`);
  const tested = result.tests.length > 0;
  const info = { name: result.measure, higher_is_better: result.higher_is_better, needs: result.descriptor };
  const how = `${result.measure} on ${result.descriptor} descriptors at ${result.layer}: ${direction(result.higher_is_better)}.`;
  part(root, "note").textContent = tested
    ? `${how} Tests exchange whole ${result.unit === "image" ? "images" : "boxes"}; ${adjustmentNote(result)} ${groupNote(result)}.`
    : `${how} ${groupNote(result)}.`;
  part(root, "note").title = explainMeasure(info);
  const intervals = tested && result.bootstrap > 0; // the column only when intervals were asked
  const rows = [];
  names.forEach((a, i) => names.forEach((b, j) => {
    if (j <= i) return;
    const t = result.tests.find((x) => x.a === a && x.b === b);
    const row = tested
      ? [`${a} – ${b}`, result.matrix[i][j], result.permutations ? t.p_value ?? "no test" : "", t.p_adjusted ?? "", t.exact ? "exact" : t.permutations]
      : [`${a} – ${b}`, result.matrix[i][j]];
    rows.push(intervals ? [...row, interval(t)] : row);
  }));
  const heading = intervalHeading(result.tests);
  const columns = tested ? ["pair", c.measure, "p-value", "adjusted", "permutations"] : ["pair", c.measure];
  if (intervals) columns.push(heading);
  const explain = (col) => explainColumn(col === heading ? INTERVAL : col, { [result.measure]: info });
  fillTable(part(root, "table"), columns, rows, explain);
  return result;
}
