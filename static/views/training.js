// Training panel: fine-tune a model on the boxes, watch the loss curve live, cancel, and
// see what moved on the held-out boxes (separation per layer under both models in one
// figure). It builds its own form inside the element main.js hands it.
import { del, get, post } from "../api.js";
import { loadControls } from "../controls.js";
import { $, fillSelect, fillTable, showError } from "../ui.js";
import { drawFigure } from "./plot.js";

const POLL_MS = 500;

const FORM = `
  <h2 id="training-title">Fine-tune on the boxes</h2>
  <form class="controls" data-part="form">
    <div><label for="train-model">Base model</label><select id="train-model"></select></div>
    <div><label for="train-layer">Layer the loss acts on</label><select id="train-layer"></select></div>
    <div><label for="train-objective">Loss</label><select id="train-objective">
      <option value="triplet">triplet (batch-hard)</option><option value="npair">N-pair</option>
      <option value="contrastive">contrastive</option><option value="mmd">MK-MMD between two labels</option>
    </select></div>
    <div><label for="train-domains">Domains for MK-MMD (two labels, comma-separated)</label>
      <input id="train-domains" type="text"></div>
    <div><label for="train-epochs">Epochs</label><input id="train-epochs" type="number" min="1" max="200" value="3"></div>
    <div><label for="train-lr">Learning rate</label><input id="train-lr" type="number" min="0" step="any" value="0.0001"></div>
    <div><label for="train-seed">Seed</label><input id="train-seed" type="number" min="0" value="0"></div>
    <div><label for="train-name">Name of the new model (empty: automatic)</label><input id="train-name" type="text"></div>
  </form>
  <div class="analysis-actions">
    <button id="run-training" type="button">Train</button>
    <button id="cancel-training" type="button" disabled>Cancel training</button>
    <span class="muted" id="training-status" aria-live="polite"></span>
    <p class="error" id="training-error" role="alert"></p>
  </div>
  <div class="view" id="training-loss-view" hidden>
    <h3>Loss per step</h3><div class="plot" id="training-loss" data-part="loss"></div>
  </div>
  <div class="view" id="training-moved-view" hidden>
    <h3>What moved on the held-out boxes</h3>
    <div class="plot" id="training-moved" data-part="moved"></div>
    <table class="scores" id="training-moved-table"></table>
    <h3>Held-out boxes at the trained layer: base model, then the fine-tuned one</h3>
    <div class="plot" id="training-scatter-before"></div>
    <div class="plot" id="training-scatter-after"></div>
  </div>`;

function lossFigure(curve) {
  const x = curve.map((p) => p.step);
  const trace = (name, key) => ({ x, y: curve.map((p) => p[key]), mode: "lines+markers", name });
  const data = [trace("loss", "loss")];
  if (curve.some((p) => p.cross_entropy > 0)) data.push(trace("objective", "objective"), trace("cross-entropy", "cross_entropy"));
  return { data, layout: { xaxis: { title: { text: "step" } }, yaxis: { title: { text: "loss" } }, margin: { t: 20 } } };
}

async function fillLayers(model) {
  const layers = await get(`/api/models/${encodeURIComponent(model)}/layers`);
  fillSelect($("train-layer"), layers, { value: (l) => l.name, text: (l) => `${l.name} (${l.channels}×${l.height}×${l.width})`, selected: layers[layers.length - 1]?.name });
}

function body() {
  const domains = $("train-domains").value.split(",").map((s) => s.trim()).filter(Boolean);
  const out = {
    model: $("train-model").value, layer: $("train-layer").value, objective: $("train-objective").value,
    epochs: Number($("train-epochs").value), lr: Number($("train-lr").value), seed: Number($("train-seed").value),
  };
  if (out.objective === "mmd") out.domains = domains;
  if ($("train-name").value.trim()) out.name = $("train-name").value.trim();
  return out;
}

async function follow(jobId, error) {
  const cancel = $("cancel-training");
  cancel.disabled = false;
  cancel.onclick = () => del(`/api/trainings/${jobId}`).catch((err) => showError(error, err));
  $("training-loss-view").hidden = false;
  try {
    for (;;) {
      const job = await get(`/api/trainings/${jobId}`);
      $("training-status").textContent = `${job.state}: ${job.message}`;
      if (job.curve.length) await drawFigure($("training-loss"), lossFigure(job.curve), "training-loss");
      if (job.state === "done") return job;
      if (["failed", "cancelled", "interrupted"].includes(job.state)) throw new Error(job.error || `training ${job.state}`);
      await new Promise((r) => setTimeout(r, POLL_MS));
    }
  } finally {
    cancel.disabled = true;
  }
}

async function train() {
  const error = $("training-error");
  error.textContent = "";
  $("run-training").disabled = true;
  try {
    const accepted = await post("/api/trainings", body());
    $("training-status").textContent = `queued: ${accepted.model} (${accepted.train_boxes} training, ${accepted.held_out_boxes} held-out boxes)`;
    const job = await follow(accepted.job_id, error);
    // The new model joins the analysis controls' list: every view can use it now.
    await loadControls().catch((err) => showError(error, err));
    if (!accepted.held_out_boxes) return;
    const moved = await post("/api/trainings/moved", { job_id: accepted.job_id });
    $("training-moved-view").hidden = false;
    await drawFigure($("training-moved"), moved.figure, `moved-${job.result.model}`);
    fillTable($("training-moved-table"), ["layer", "ratio before", "ratio after", "silhouette before", "silhouette after"],
      moved.layers.map((l) => [l.layer, l.ratio_before, l.ratio_after, l.silhouette_before, l.silhouette_after]));
    for (const key of ["before", "after"]) {
      if (moved.scatter) await drawFigure($(`training-scatter-${key}`), moved.scatter[key].figure, `scatter-${key}`);
    }
  } catch (err) {
    showError(error, err);
  } finally {
    $("run-training").disabled = false;
  }
}

async function build(root) {
  root.innerHTML = FORM;
  root.setAttribute("aria-labelledby", "training-title");
  root.hidden = false;
  const models = await get("/api/models");
  const select = $("train-model");
  fillSelect(select, models, { value: (m) => m.name, text: (m) => m.name });
  select.addEventListener("change", () => fillLayers(select.value).catch((err) => showError($("training-error"), err)));
  await fillLayers(select.value);
  $("run-training").addEventListener("click", train);
}

// `root`: the panel's (empty) element; a failure to list models is shown inside it.
export function initTraining(root) {
  build(root).catch((err) => showError($("training-error") || root, err));
}
