// The label bar, which is also the editor's legend: every label with its colour (the one
// the heat map, matrix, profile and scatter use), its boxes on this image and in the whole
// store, and its hotkey (1–9). A click or the hotkey makes it the active label: the label
// new boxes take. Choosing a label never changes an existing box.
import { labelColour } from "./palette.js";

export const HOTKEYS = 9;

// The labels in bar order: the store's (as GET /api/labels orders them), then the active
// label if no box has it yet.
export function barLabels(rows, active) {
  const names = rows.map((row) => row.label);
  if (active && !names.includes(active)) names.push(active);
  return names;
}

// Fill `list` (a <ul>): `rows` from GET /api/labels, `boxes` the image's boxes, `active` the
// active label; `onPick(label)` when one is clicked.
export function renderLabelBar(list, { rows, boxes, active, onPick }) {
  const total = new Map(rows.map((row) => [row.label, row.boxes]));
  const here = new Map();
  for (const box of boxes) here.set(box.label, (here.get(box.label) || 0) + 1);
  const items = barLabels(rows, active).map((label, index) => {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "label-chip";
    button.dataset.label = label;
    button.setAttribute("aria-pressed", String(label === active));
    const onImage = here.get(label) || 0, inStore = total.get(label) || 0;
    button.title = `${label}: ${onImage} box${onImage === 1 ? "" : "es"} on this image, `
      + `${inStore} in all images${index < HOTKEYS ? `; key ${index + 1} makes it active` : ""}`;
    const key = document.createElement("kbd");
    key.textContent = index < HOTKEYS ? String(index + 1) : "";
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = labelColour(label);
    const name = document.createElement("span");
    name.className = "label-name";
    name.textContent = label;
    const count = document.createElement("span");
    count.className = "label-count";
    count.textContent = `${onImage} / ${inStore}`;
    button.append(key, swatch, name, count);
    button.addEventListener("click", () => onPick(label));
    const item = document.createElement("li");
    item.append(button);
    return item;
  });
  list.replaceChildren(...items);
}
