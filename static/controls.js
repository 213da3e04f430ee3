// The controls: model, layer (with its output shape), descriptor, measure, permutations,
// bootstrap, scatter; and the heat-map panel beside the image (method, its layer, the class
// to explain by name, channel, colour scaling, native size). Views read them through
// `choices()`.
import { get } from "./api.js";
import { direction, explainDescriptor, explainMeasure, explainMethod } from "./glossary.js";
import { $, fillSelect, guarded, showError } from "./ui.js";

let layers = [];
let measures = [];
let methods = [];
let classes = [];

export async function initControls() {
  $("model").addEventListener("change", () => loadLayers());
  $("layer").addEventListener("change", showShape);
  // Each measure names the descriptor it consumes; offer that one when the measure changes.
  $("measure").addEventListener("change", () => {
    const measure = measures.find((m) => m.name === $("measure").value);
    if (measure && [...$("descriptor").options].some((o) => o.value === measure.needs)) $("descriptor").value = measure.needs;
    $("measure").title = measure ? explainMeasure(measure) : "";
  });
  $("descriptor").addEventListener("change", () => { $("descriptor").title = explainDescriptor($("descriptor").value); });
  for (const option of $("descriptor").options) option.title = explainDescriptor(option.value);
  $("method").addEventListener("change", showMethod);
  $("heat-layer").addEventListener("change", showMethod);
  $("grid-methods").addEventListener("change", showMethod);
  $("scorecam-all").addEventListener("change", () => { $("scorecam-channels").disabled = $("scorecam-all").checked; });
  $("embed-method").addEventListener("change", () => { $("perplexity-field").hidden = $("embed-method").value !== "tsne"; });
  await loadControls();
}

// (Re)load the lists from the API, e.g. after the token changed.
export async function loadControls() {
  // Each list loads on its own, so one failing endpoint leaves the others usable.
  const [models, methodList, measureList] = await Promise.allSettled([
    get("/api/models"), get("/api/heatmap-methods"), get("/api/measures"),
  ]);
  const failed = [models, methodList, measureList].filter((r) => r.status === "rejected").map((r) => r.reason.message);
  if (methodList.status === "fulfilled") {
    methods = methodList.value;
    fillSelect($("method"), methods, { value: nameOf, text: methodText, selected: $("method").value || "gradcam" });
    fillSelect($("grid-methods"), methods, { value: nameOf, text: methodText });
    for (const select of [$("method"), $("grid-methods")]) {
      for (const option of select.options) option.title = explainMethod(option.value);
    }
    showMethod();
  }
  if (measureList.status === "fulfilled") {
    measures = measureList.value;
    fillSelect($("measure"), measures, { value: nameOf, text: measureText, selected: $("measure").value || "euclidean" });
    for (const option of $("measure").options) option.title = explainMeasure(measures.find((m) => m.name === option.value));
    $("measure").dispatchEvent(new Event("change"));
  }
  if (models.status === "fulfilled") {
    // The server's default model (FEATUREGAP_DEFAULT_MODEL, from the page) until one is picked.
    const model = $("model");
    fillSelect(model, models.value, {
      value: (m) => m.name, text: (m) => `${m.name} (${m.architecture})`, selected: model.value || model.dataset.default,
    });
    await loadLayers();
  }
  if (failed.length) showError($("controls-error"), new Error([...new Set(failed)].join("; ")));
}

const nameOf = (item) => (typeof item === "string" ? item : item.name);
const measureText = (m) => `${m.name}: ${direction(m.higher_is_better)}, on ${m.needs}`;
const methodText = (m) => `${m.name}${m.needs_target ? "" : " (no class)"}`;

// A class as the target field shows it; `parseTarget` reads it back.
const classText = (c) => `${c.name} (${c.index})`;

async function loadLayers() {
  await guarded($("controls-error"), async () => {
    const model = encodeURIComponent($("model").value);
    [layers, classes] = await Promise.all([get(`/api/models/${model}/layers`), get(`/api/models/${model}/classes`)]);
    const names = layers.map((l) => l.name);
    // Default: the deepest layer that still has a spatial map (heat maps need one).
    const spatial = layers.filter((l) => l.height > 1 && l.width > 1).map((l) => l.name);
    const fallback = spatial.at(-1) ?? names.at(-1);
    for (const id of ["layer", "heat-layer"]) {
      const keep = $(id).value;
      fillSelect($(id), names, { selected: names.includes(keep) ? keep : fallback });
    }
    const blocks = new Set(blockOutputs());
    const text = (name) => (blocks.has(name) ? `${name} (block output)` : name);
    fillSelect($("profile-layers"), names, { text });
    fillSelect($("grid-layers"), names, { text });
    $("class-names").replaceChildren(...classes.map((c) => new Option(classText(c))));
    showShape();
    showMethod();
  });
}

function showShape() {
  const layer = layers.find((l) => l.name === $("layer").value);
  $("layer-shape").textContent = layer ? `output ${layer.channels}×${layer.height}×${layer.width}` : "";
}

// The method's own fields: a class for class methods, a channel for `channel`.
function showMethod() {
  const method = methods.find((m) => m.name === $("method").value);
  $("target-field").hidden = method ? !method.needs_target : false;
  $("channel-field").hidden = $("method").value !== "channel";
  // Score-CAM's channels: for the panel's method, or for the comparison grid's
  const gridScoreCam = [...$("grid-methods").selectedOptions].some((o) => o.value === "scorecam");
  $("scorecam-field").hidden = $("method").value !== "scorecam" && !gridScoreCam;
  const layer = layers.find((l) => l.name === $("heat-layer").value);
  if (layer) $("channel").max = String(layer.channels - 1);
  $("channel").title = layer ? `0 … ${layer.channels - 1} at ${layer.name}` : "";
  $("scorecam-channels").max = String(scoreCamChannels(layer));
  $("scorecam-all").parentElement.title = layer ? `${scoreCamChannels(layer)} channels at ${layer.name}` : "";
  $("method-about").textContent = method ? explainMethod(method.name) : "";
}

// The output of each block (`blocks.3.1`, `layer2.0`, …): the last graph node inside it,
// skipping identity-like nodes (drop_path, dropout) that repeat their input. Layers outside
// any numbered block (the stem, the head) are not block outputs.
export function blockOutputs(list = layers) {
  const last = new Map();
  for (const layer of list) {
    if (layer.height <= 1 || layer.width <= 1) continue;
    const parts = layer.name.split(".");
    if (/(^|_)(drop_?path|dropout)$/i.test(parts.at(-1))) continue;
    let end = -1;
    for (let i = 0; i < parts.length - 1; i += 1) if (/^\d+$/.test(parts[i])) end = i;
    if (end < 0) continue;
    last.set(parts.slice(0, end + 1).join("."), layer.name);
  }
  return [...last.values()];
}

// Up to `n` block outputs (first, last and evenly between) for the profile; a model without
// numbered blocks falls back to its layers with a spatial map (a 1×1 map is the same for
// every box of an image), identity-like nodes left out.
function spread(n) {
  const blocks = blockOutputs();
  const spatial = layers.filter((l) => l.height > 1 && l.width > 1 && !/(drop_?path|dropout)$/i.test(l.name)).map((l) => l.name);
  const pool = blocks.length >= 2 ? blocks : spatial.length ? spatial : layers.map((l) => l.name);
  if (pool.length <= n) return pool;
  return Array.from({ length: n }, (_, i) => pool[Math.round((i * (pool.length - 1)) / (n - 1))]);
}

// The target field: empty (top prediction), a class index, or a name from the list
// ("Egyptian cat (285)" or just "Egyptian cat").
export function parseTarget(text) {
  const value = text.trim();
  if (value === "") return null;
  if (/^\d+$/.test(value)) return Number(value);
  const indexed = value.match(/\((\d+)\)$/);
  if (indexed) return Number(indexed[1]);
  const found = classes.find((c) => c.name.toLowerCase() === value.toLowerCase());
  if (found) return found.index;
  throw new Error(`unknown class “${value}”: pick one from the list (type part of its name) or give its number`);
}

// Point the target field at a class (a click on a prediction).
export function setTarget(index, label) {
  const known = classes.find((c) => c.index === index);
  $("target").value = classText(known || { name: label, index });
  const method = methods.find((m) => m.name === $("method").value);
  if (method && !method.needs_target) {
    $("method").value = "gradcam";
    showMethod();
  }
}

export function choices() {
  const picked = [...$("profile-layers").selectedOptions].map((o) => o.value);
  const perplexity = $("perplexity").value.trim();
  return {
    model: $("model").value,
    layer: $("layer").value,
    descriptor: $("descriptor").value,
    measure: $("measure").value,
    measureInfo: measures.find((m) => m.name === $("measure").value) || null,
    permutations: Number($("permutations").value) || 0,
    bootstrap: Number($("bootstrap").value) || 0,
    embedMethod: $("embed-method").value,
    perplexity: perplexity === "" ? null : Number(perplexity),
    profileLayers: picked.length ? picked : spread(6),
  };
}

// Score-CAM's most channels at `layer`: all of them, up to the method's bound (its schema's).
function scoreCamChannels(layer) {
  const bound = methods.find((m) => m.name === "scorecam")?.options?.properties?.max_channels?.maximum ?? 512;
  return layer ? Math.min(bound, layer.channels) : bound;
}

// Score-CAM's options: the channels asked for, or every channel of the layer.
function scoreCamOptions(layerName) {
  const layer = layers.find((l) => l.name === layerName);
  const most = scoreCamChannels(layer);
  const asked = $("scorecam-all").checked ? most : Math.min(most, Math.max(1, Math.round(Number($("scorecam-channels").value) || 64)));
  return { max_channels: asked };
}

// The heat-map panel's request fields (target and channel only where the method takes them).
export function heatChoices() {
  const method = $("method").value;
  const info = methods.find((m) => m.name === method);
  return {
    model: $("model").value,
    layer: $("heat-layer").value,
    method,
    target: info && !info.needs_target ? null : parseTarget($("target").value),
    channel: method === "channel" ? Number($("channel").value) : null,
    options: method === "scorecam" ? scoreCamOptions($("heat-layer").value) : null,
    normalise: $("normalise").value,
    mode: $("native").checked ? "native" : "resize",
    opacity: Number($("heatmap-opacity").value),
  };
}

// The comparison grid's cells: every picked method × every picked layer.
export function gridChoices() {
  const base = heatChoices();
  const pick = (id) => [...$(id).selectedOptions].map((o) => o.value);
  const gridMethods = pick("grid-methods");
  const gridLayers = pick("grid-layers");
  const cells = [];
  for (const method of gridMethods.length ? gridMethods : [base.method]) {
    for (const layer of gridLayers.length ? gridLayers : [base.layer]) {
      const info = methods.find((m) => m.name === method);
      cells.push({
        ...base, method, layer,
        target: info && !info.needs_target ? null : base.target,
        channel: method === "channel" ? Number($("channel").value) : null,
        options: method === "scorecam" ? scoreCamOptions(layer) : null,
      });
    }
  }
  return cells;
}
