// The analysis controls: model, layer (with its output shape), method, target, descriptor,
// measure, permutations. Their values are read by the views through `choices()`.
import { get } from "./api.js";
import { $, fillSelect, guarded } from "./ui.js";

let layers = [];

export async function initControls() {
  $("model").addEventListener("change", () => loadLayers());
  $("layer").addEventListener("change", showShape);
  await guarded($("controls-error"), async () => {
    const [models, methods, measures] = await Promise.all([
      get("/api/models"), get("/api/heatmap-methods").catch(() => null), get("/api/measures").catch(() => null),
    ]);
    fillSelect($("model"), models, { value: (m) => m.name, text: (m) => `${m.name} (${m.architecture})` });
    if (methods) fillSelect($("method"), methods, { value: nameOf, text: nameOf, selected: "gradcam" });
    if (measures) fillSelect($("measure"), measures, { value: nameOf, text: measureText });
    await loadLayers();
  });
}

const nameOf = (item) => (typeof item === "string" ? item : item.name);
const measureText = (m) => (typeof m === "string" ? m
  : `${m.name}${m.higher_is_better === undefined ? "" : m.higher_is_better ? " (higher: further)" : ""}`);

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
function spread(n) {
  if (layers.length <= n) return layers.map((l) => l.name);
  return Array.from({ length: n }, (_, i) => layers[Math.round((i * (layers.length - 1)) / (n - 1))].name);
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
    embedMethod: $("embed-method").value,
    profileLayers: picked.length ? picked : spread(6),
  };
}
