// Separation profile across layers: inter / intra and the silhouette as two aligned panels
// (the API's figure), the numbers in a table with tooltips, and what limits them.
import { direction, explainColumn } from "../glossary.js";
import * as jobs from "../jobs.js";
import { fillTable, part, showWarnings } from "../ui.js";
import { drawFigure } from "./plot.js";

// What the answer cannot say: a label with one box has no intra-group distance.
function limits(result) {
  const sizes = Object.entries(result.sizes || {});
  const warnings = sizes.filter(([, n]) => n < 2)
    .map(([label, n]) => `“${label}” has ${n} box${n === 1 ? "" : "es"}: no distance within it, so it counts only towards inter.`);
  const small = sizes.filter(([, n]) => n >= 2 && n < 5).map(([label]) => label);
  if (small.length) warnings.push(`Few boxes (under 5) for ${small.map((l) => `“${l}”`).join(", ")}: intra rests on a handful of pairs.`);
  const undefinedLayers = result.layers.filter((l) => l.ratio === null).map((l) => l.layer);
  if (undefinedLayers.length) warnings.push(`No ratio at ${undefinedLayers.join(", ")} (intra is 0 or undefined).`);
  return warnings;
}

// `root`: the view's element, holding its note, warnings, plot and table parts.
export async function showSeparation(root, labels, c) {
  const body = { labels, model: c.model, layers: c.profileLayers, measure: c.measure, descriptor: c.descriptor };
  const result = await jobs.run("Layer profile", "/api/separation", body, c.tray);
  root.hidden = false;
  const way = c.measureInfo ? ` (${direction(c.measureInfo.higher_is_better)})` : "";
  const sizes = Object.entries(result.sizes || {}).map(([label, n]) => `${label}: ${n}`).join(", ");
  part(root, "note").textContent = `${result.measure}${way} on ${result.descriptor} descriptors, ${result.model}; boxes per label: ${sizes}.`
    + " Higher inter / intra and higher silhouette separate the labels better.";
  showWarnings(part(root, "warnings"), limits(result));
  await drawFigure(part(root, "plot"), result.figure, `separation-${c.measure}`);
  fillTable(part(root, "table"), ["layer", "intra", "inter", "inter / intra", "silhouette"],
    result.layers.map((l) => [l.layer, l.intra, l.inter, l.ratio, l.silhouette]), (col) => explainColumn(col));
  return result;
}
