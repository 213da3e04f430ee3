// Training panel: fine-tune a model on the boxes, watch the loss curve live, cancel, and
// see what moved on the held-out boxes under the base model and the fine-tuned one: the
// separation per layer (one figure), the distance matrices with their p-values, the
// scatters and one image's heat maps, each pair side by side. It builds its own form
// inside the element main.js hands it.
import { del, get, post } from "../api.js";
import { loadControls } from "../controls.js";
import { explainColumn, explainMethod } from "../glossary.js";
import { $, fillSelect, fillTable, showError, showWarnings } from "../ui.js";
import { scoreTable, withLocalImages } from "./heatmap.js";
import { drawFigure } from "./plot.js";

const POLL_MS = 400;
const SIDES = ["before", "after"];

const pair = (prefix, inner) => `<ul class="heat-grid">${SIDES.map((side) => `
  <li class="heat-cell"><h4 id="${prefix}-title-${side}"></h4>${inner(side)}</li>`).join("")}</ul>`;

const FORM = `
  <h2 id="training-title">Fine-tune on the boxes</h2>
  <form class="controls" data-part="form">
    <div><label for="train-model">Base model</label><select id="train-model"></select></div>
    <div><label for="train-layer">Layer the loss acts on</label><select id="train-layer"></select></div>
    <div><label for="train-objective">Loss</label><select id="train-objective">
      <option value="triplet">triplet (batch-hard)</option><option value="npair">N-pair</option>
      <option value="contrastive">contrastive</option><option value="mmd">MK-MMD between two labels</option>
    </select></div>
    <div><label for="train-labels">Labels (comma-separated; empty: all)</label><input id="train-labels" type="text"></div>
    <div><label for="train-domains">Domains for MK-MMD (two labels, comma-separated)</label>
      <input id="train-domains" type="text"></div>
    <div><label for="train-epochs">Epochs</label><input id="train-epochs" type="number" min="1" max="200" value="3"></div>
    <div><label for="train-lr">Learning rate</label><input id="train-lr" type="number" min="0" step="any" value="0.0001"></div>
    <div><label for="train-batch">Batch size</label><input id="train-batch" type="number" min="2" max="512" value="32"></div>
    <div><label for="train-crop">Crop size in px (0: the model's input size)</label><input id="train-crop" type="number" min="0" max="1024" value="0"></div>
    <div><label for="train-holdout">Share of images held out</label><input id="train-holdout" type="number" min="0" max="0.95" step="any" value="0.25"></div>
    <div><label for="train-seed">Seed</label><input id="train-seed" type="number" min="0" value="0"></div>
    <div><label for="train-name">Name of the new model (empty: automatic)</label><input id="train-name" type="text"></div>
    <div><label for="train-permutations">Permutations for the p-values</label><input id="train-permutations" type="number" min="0" max="100000" value="1000"></div>
  </form>
  <div class="analysis-actions">
    <button id="run-training" type="button">Train</button>
    <button id="cancel-training" type="button" disabled>Cancel training</button>
    <span class="muted" id="training-status" aria-live="polite"></span>
    <p class="error" id="training-error" role="alert"></p>
  </div>
  <ul class="warnings" id="training-warnings" role="status" hidden></ul>
  <div class="view" id="training-loss-view" hidden>
    <h3>Loss per step</h3><div class="plot" id="training-loss" data-part="loss"></div>
  </div>
  <div class="view" id="training-moved-view" hidden>
    <h3>What moved on the held-out boxes</h3>
    <p class="muted" id="training-moved-note"></p>
    <div class="plot" id="training-moved" data-part="moved"></div>
    <table class="scores" id="training-moved-table"></table>
    <h3 id="training-matrix-heading">Distance matrices</h3>
    <ul class="warnings" id="training-matrix-warnings" role="status" hidden></ul>
    ${pair("training-matrix", (side) => `<div class="plot" id="training-matrix-${side}"></div>`)}
    <table class="scores" id="training-matrix-table"></table>
    <h3 id="training-scatter-heading">Held-out boxes: base model, then the fine-tuned one</h3>
    ${pair("training-scatter", (side) => `<div class="plot" id="training-scatter-${side}"></div>`)}
    <h3 id="training-heat-heading">Heat maps of one held-out image</h3>
    ${pair("training-heat", (side) => `<div class="plot" id="training-heat-${side}"></div>
      <table class="scores" id="training-heat-table-${side}"></table>`)}
  </div>`;

function lossFigure(curve) {
  const x = curve.map((p) => p.step);
  const trace = (name, key) => ({ x, y: curve.map((p) => p[key]), mode: "lines+markers", name });
  const data = [trace("loss", "loss")];
  if (curve.some((p) => p.cross_entropy > 0)) data.push(trace("objective", "objective"), trace("cross-entropy", "cross_entropy"));
  return { data, layout: { xaxis: { title: { text: "step" } }, yaxis: { title: { text: "loss" } }, margin: { t: 20 } } };
}

const list = (text) => text.split(",").map((s) => s.trim()).filter(Boolean);

async function fillModels(selected) {
  const models = await get("/api/models");
  fillSelect($("train-model"), models, { value: (m) => m.name, text: (m) => m.name, selected });
}

// The default is what the server picks too: the last layer with a spatial extent (a
// 1×1 pooled vector has no region to train on).
async function fillLayers(model) {
  const layers = await get(`/api/models/${encodeURIComponent(model)}/layers`);
  const maps = layers.filter((l) => l.height * l.width > 1);
  fillSelect($("train-layer"), layers, {
    value: (l) => l.name, text: (l) => `${l.name} (${l.channels}×${l.height}×${l.width})`,
    selected: (maps.at(-1) || layers.at(-1))?.name,
  });
}

function body() {
  const out = {
    model: $("train-model").value, layer: $("train-layer").value, objective: $("train-objective").value,
    epochs: Number($("train-epochs").value), lr: Number($("train-lr").value), seed: Number($("train-seed").value),
    batch_size: Number($("train-batch").value), crop_size: Number($("train-crop").value),
    holdout: Number($("train-holdout").value),
  };
  const labels = list($("train-labels").value);
  if (labels.length) out.labels = labels;
  if (out.objective === "mmd") out.domains = list($("train-domains").value);
  if ($("train-name").value.trim()) out.name = $("train-name").value.trim();
  return out;
}

// Poll the job until it ends; returns its last state (done, cancelled, …).
async function follow(jobId, error) {
  const cancel = $("cancel-training");
  cancel.disabled = false;
  cancel.onclick = () => {
    cancel.disabled = true;
    del(`/api/trainings/${jobId}`).catch((err) => showError(error, err));
  };
  $("training-loss-view").hidden = false;
  let drawn = 0;
  try {
    for (;;) {
      const job = await get(`/api/trainings/${jobId}`);
      $("training-status").textContent = `${job.state}: ${job.message}`;
      if (job.curve.length !== drawn) {
        drawn = job.curve.length;
        await drawFigure($("training-loss"), lossFigure(job.curve), "training-loss");
      }
      if (!["queued", "running"].includes(job.state)) return job;
      await new Promise((r) => setTimeout(r, POLL_MS));
    }
  } finally {
    cancel.disabled = true;
    cancel.onclick = null;
  }
}

const seconds = (s) => `${Number(s).toFixed(1)} s`;

// A cancelled job saved nothing unless it was stopped during the comparison that follows
// training: say which.
async function cancelledText(name) {
  const models = await get("/api/models");
  return models.some((m) => m.name === name)
    ? `cancelled after ${name} was saved: the model is kept, the comparison is not`
    : "cancelled: nothing was saved";
}

// A new run starts from a clean panel: no curve or comparison of the previous run stays.
function clearViews() {
  for (const view of [$("training-loss-view"), $("training-moved-view")]) {
    for (const plot of view.querySelectorAll(".js-plotly-plot")) window.Plotly.purge(plot);
    view.hidden = true;
  }
}

async function train() {
  const error = $("training-error");
  error.textContent = "";
  showWarnings($("training-warnings"), []);
  clearViews();
  $("run-training").disabled = true;
  try {
    const accepted = await post("/api/trainings", body());
    showWarnings($("training-warnings"), accepted.warnings);
    $("training-status").textContent = `queued: ${accepted.model} (${accepted.train_boxes} training, ${accepted.held_out_boxes} held-out boxes)`;
    const job = await follow(accepted.job_id, error);
    if (job.state === "cancelled") {
      $("training-status").textContent = await cancelledText(accepted.model);
      return;
    }
    if (job.state !== "done") throw new Error(job.error || `training ${job.state}`);
    const result = job.result;
    $("training-status").textContent = `done: ${result.model} saved (${result.curve.length} steps in ${seconds(result.seconds)} on ${result.device})`;
    showWarnings($("training-warnings"), result.warnings);
    // The new model joins both model lists: every view can use it, and it can be tuned on.
    await Promise.all([loadControls(), fillModels($("train-model").value)]);
    if (!accepted.held_out_boxes) return;
    $("training-status").textContent += "; comparing it with the base model on the held-out boxes…";
    const moved = await post("/api/trainings/moved", { job_id: accepted.job_id, permutations: Number($("train-permutations").value) || 0 });
    await showMoved(moved, accepted.held_out_boxes);
    $("training-status").textContent = `done: ${result.model} saved; what moved is below`;
  } catch (err) {
    showError(error, err);
  } finally {
    $("run-training").disabled = false;
  }
}

const titles = (prefix, moved) => SIDES.forEach((side) => {
  $(`${prefix}-title-${side}`).textContent = side === "before" ? `${moved.before} (base)` : `${moved.after} (fine-tuned)`;
});

async function showMoved(moved, heldOut) {
  $("training-moved-view").hidden = false;
  $("training-moved-note").textContent = `${heldOut} held-out boxes (from images never used in training), ${moved.before} dashed, ${moved.after} solid.`
    + " Higher inter / intra and higher silhouette separate the labels better.";
  await drawFigure($("training-moved"), moved.figure, `moved-${moved.after}`);
  fillTable($("training-moved-table"), ["layer", "ratio before", "ratio after", "silhouette before", "silhouette after"],
    moved.layers.map((l) => [l.layer, l.ratio_before, l.ratio_after, l.silhouette_before, l.silhouette_after]));
  if (moved.distances) await showMatrices(moved);
  if (moved.scatter) {
    titles("training-scatter", moved);
    $("training-scatter-heading").textContent = `Held-out boxes at ${moved.scatter.after.layer} (${moved.scatter.after.method})`;
    for (const side of SIDES) await drawFigure($(`training-scatter-${side}`), moved.scatter[side].figure, `scatter-${side}`);
  }
  if (moved.heatmaps) await showHeatmaps(moved);
}

async function showMatrices(moved) {
  const { before, after } = moved.distances;
  titles("training-matrix", moved);
  $("training-matrix-heading").textContent = `Distance matrices at ${after.layer} (${after.measure} on ${after.descriptor})`;
  showWarnings($("training-matrix-warnings"), [...new Set([...before.warnings, ...after.warnings])]);
  for (const side of SIDES) await drawFigure($(`training-matrix-${side}`), moved.distances[side].figure, `matrix-${side}`);
  const names = after.labels;
  const p = (result, a, b) => {
    if (!result.permutations) return "";
    const t = result.tests.find((x) => x.a === a && x.b === b);
    return t?.p_value ?? "no test";
  };
  const rows = [];
  names.forEach((a, i) => names.forEach((b, j) => {
    if (j > i) rows.push([`${a} – ${b}`, before.matrix[i][j], after.matrix[i][j], p(before, a, b), p(after, a, b)]);
  }));
  fillTable($("training-matrix-table"), ["pair", "before", "after", "p-value before", "p-value after"], rows, (c) => explainColumn(c));
}

async function showHeatmaps(moved) {
  const heat = moved.heatmaps;
  titles("training-heat", moved);
  const what = heat.target === null ? "no class" : `explaining ${heat.target_label ?? "class"} (${heat.target}) under both`;
  $("training-heat-heading").textContent = `Heat maps of ${heat.filename || `image ${heat.image_id}`}: ${heat.method} on ${heat.layer}, ${what}`;
  $("training-heat-heading").title = explainMethod(heat.method);
  for (const side of SIDES) {
    await drawFigure($(`training-heat-${side}`), await withLocalImages(heat[side].figure), `heatmap-${side}`);
    const table = scoreTable(heat[side], false);
    fillTable($(`training-heat-table-${side}`), table.columns, table.rows, (c) => explainColumn(c));
  }
}

async function build(root) {
  root.innerHTML = FORM;
  root.setAttribute("aria-labelledby", "training-title");
  root.hidden = false;
  await fillModels();
  const select = $("train-model");
  select.addEventListener("change", () => fillLayers(select.value).catch((err) => showError($("training-error"), err)));
  await fillLayers(select.value);
  $("run-training").addEventListener("click", train);
  root.dataset.ready = "1";
}

// `root`: the panel's (empty) element; a failure to list models is shown inside it.
export function initTraining(root) {
  build(root).catch((err) => showError($("training-error") || root, err));
}
