// Top-k predictions for the image and for each of its boxes; a click on a class makes it
// the heat map's target.
import { post } from "../api.js";
import * as jobs from "../jobs.js";
import { part } from "../ui.js";

function list(title, predictions, onPick) {
  const block = document.createElement("div");
  block.append(Object.assign(document.createElement("h4"), { textContent: title }));
  const ol = document.createElement("ol");
  for (const p of predictions) {
    const button = Object.assign(document.createElement("button"), {
      type: "button", className: "prediction",
      textContent: `${p.label} (${p.index}): ${(100 * p.probability).toFixed(1)}%`,
      title: `Explain “${p.label}” in the heat map`,
    });
    button.dataset.index = p.index;
    button.addEventListener("click", () => onPick(p.index, p.label));
    const li = document.createElement("li");
    li.append(button);
    ol.append(li);
  }
  block.append(ol);
  return block;
}

// One request for the whole image and one per box (its crop), listed in `root`'s list part.
export async function showPredictions(root, image, c, boxes, { onPick, tray }) {
  const ask = (box, signal) => post("/api/predictions", { image_id: image.id, model: c.model, box_id: box ? box.id : null, k: 5 }, { signal });
  const results = await jobs.track("Predictions", (signal) => Promise.all([null, ...boxes].map((b) => ask(b, signal))), tray);
  const blocks = [list("Whole image", results[0].predictions, onPick)];
  boxes.forEach((box, i) => blocks.push(list(`Box ${box.id} “${box.label}”`, results[i + 1].predictions, onPick)));
  const holder = Object.assign(document.createElement("div"), { className: "predictions-list" });
  holder.append(...blocks);
  part(root, "list").replaceChildren(holder);
  root.hidden = false;
  return results;
}
