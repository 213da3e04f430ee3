// Top-k predictions for the image and for each of its boxes.
import * as jobs from "../jobs.js";
import { $ } from "../ui.js";

function list(title, entries) {
  const block = document.createElement("div");
  block.append(Object.assign(document.createElement("h4"), { textContent: title }));
  const ol = document.createElement("ol");
  for (const e of entries || []) {
    const name = e.class_name ?? e.name ?? e.label ?? `class ${e.index ?? e.class_index}`;
    const p = e.probability ?? e.score ?? 0;
    ol.append(Object.assign(document.createElement("li"), {
      textContent: `${name} (${e.index ?? e.class_index ?? "?"}): ${(100 * p).toFixed(1)}%`,
    }));
  }
  block.append(ol);
  return block;
}

export async function showPredictions(image, c) {
  const result = await jobs.run("Predictions", "/api/predictions", { image_id: image.id, model: c.model, k: 5 });
  const blocks = [list("Whole image", result.image ?? result.top ?? result.predictions)];
  for (const box of result.boxes || []) blocks.push(list(`Box ${box.box_id} “${box.label ?? ""}”`, box.top ?? box.predictions));
  const holder = Object.assign(document.createElement("div"), { className: "predictions-list" });
  holder.append(...blocks);
  $("predictions").replaceChildren(holder);
  $("predictions-view").hidden = false;
  return result;
}
