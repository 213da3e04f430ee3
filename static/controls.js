// The analysis controls: model, layer (with its output shape), method, target, descriptor,
// measure, permutations, bootstrap. Their values are read by the views through `choices()`.
import { get } from "./api.js";
import { $, fillSelect, guarded, showError } from "./ui.js";

let layers = [];
let measures = [];

export async function initControls() {
  $("model").addEventListener("change", () => loadLayers());
  $("layer").addEventListener("change", showShape);
  // Each measure names the descriptor it consumes; offer that one when the measure changes.
  $("measure").addEventListener("change", () => {
    const needs = measures.find((m) => m.name === $("measure").value)?.needs;
    if (needs && [...$("descriptor").options].some((o) => o.value === needs)) $("descriptor").value = needs;
  });
  await loadControls();
}

// (Re)load the lists from the API, e.g. after the token changed.
export async function loadControls() {
  // Each list loads on its own, so one failing endpoint leaves the others usable.
  const [models, methods, measureList] = await Promise.allSettled([
    get("/api/models"), get("/api/heatmap-methods"), get("/api/measures"),
  ]);
  const failed = [models, methods, measureList].filter((r) => r.status === "rejected").map((r) => r.reason.message);
  if (methods.status === "fulfilled") {
    fillSelect($("method"), methods.value, { value: nameOf, text: nameOf, selected: "gradcam" });
  }
  if (measureList.status === "fulfilled") {
    measures = measureList.value;
    fillSelect($("measure"), measures, { value: nameOf, text: measureText, selected: "euclidean" });
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
const measureText = (m) => `${m.name} (on ${m.needs})`;

async function loadLayers() {
  await guarded($("controls-error"), async () => {
    layers = await get(`/api/models/${encodeURIComponent($("model").value)}/layers`);
    const names = layers.map((l) => l.name);
    const keep = $("layer").value;
    // Default: the deepest layer that still has a spatial map (heat maps need one).
    const spatial = layers.filter((l) => l.height > 1 && l.width > 1).map((l) => l.name);
    fillSelect($("layer"), names, { selected: names.includes(keep) ? keep : spatial.at(-1) ?? names.at(-1) });
    fillSelect($("profile-layers"), names);
    showShape();
  });
}

function showShape() {
  const layer = layers.find((l) => l.name === $("layer").value);
  $("layer-shape").textContent = layer ? `output ${layer.channels}×${layer.height}×${layer.width}` : "";
}

// A spread of up to `n` layers (first, last and evenly between) for the profile.
// Only layers with a spatial map: a 1×1 map is the same for every box of an image.
function spread(n) {
  const spatial = layers.filter((l) => l.height > 1 && l.width > 1);
  const pool = spatial.length ? spatial : layers;
  if (pool.length <= n) return pool.map((l) => l.name);
  return Array.from({ length: n }, (_, i) => pool[Math.round((i * (pool.length - 1)) / (n - 1))].name);
}

export function choices() {
  const target = $("target").value.trim();
  const picked = [...$("profile-layers").selectedOptions].map((o) => o.value);
  return {
    model: $("model").value,
    layer: $("layer").value,
    method: $("method").value,
    target: target === "" ? null : Number(target),
    descriptor: $("descriptor").value,
    measure: $("measure").value,
    permutations: Number($("permutations").value) || 0,
    bootstrap: Number($("bootstrap").value) || 0,
    embedMethod: $("embed-method").value,
    profileLayers: picked.length ? picked : spread(6),
  };
}
