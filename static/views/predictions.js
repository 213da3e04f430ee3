// Top-k predictions for the image and for each of its boxes.
import { post } from "../api.js";
import * as jobs from "../jobs.js";
import { part } from "../ui.js";

function list(title, predictions) {
  const block = document.createElement("div");
  block.append(Object.assign(document.createElement("h4"), { textContent: title }));
  const ol = document.createElement("ol");
  for (const p of predictions) {
    ol.append(Object.assign(document.createElement("li"), {
      textContent: `${p.label} (${p.index}): ${(100 * p.probability).toFixed(1)}%`,
    }));
  }
  block.append(ol);
  return block;
}

// One request for the whole image and one per box (its crop), listed in `root`'s list part.
export async function showPredictions(root, image, c, boxes) {
  const ask = (box) => post("/api/predictions", { image_id: image.id, model: c.model, box_id: box ? box.id : null, k: 5 });
  const results = await jobs.track("Predictions", () => Promise.all([null, ...boxes].map(ask)));
  const blocks = [list("Whole image", results[0].predictions)];
  boxes.forEach((box, i) => blocks.push(list(`Box ${box.id} “${box.label}”`, results[i + 1].predictions)));
  const holder = Object.assign(document.createElement("div"), { className: "predictions-list" });
  holder.append(...blocks);
  part(root, "list").replaceChildren(holder);
  root.hidden = false;
  return results;
}
