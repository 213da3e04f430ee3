// The gallery: upload (picker or drop, several at once, with progress), cards, delete, COCO.
import { blob, del, download, forgetImageUrls, get, imageUrl, upload } from "./api.js";
import * as jobs from "./jobs.js";
import { $, guarded, rememberLabel, showError } from "./ui.js";

let openImage = () => {};
let changed = () => {};

export function initGallery({ onOpen, onChanged }) {
  openImage = onOpen;
  changed = onChanged || changed;
  $("upload-input").addEventListener("change", (e) => {
    uploadAll([...e.target.files]);
    e.target.value = "";
  });
  const zone = $("drop-zone");
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    uploadAll([...e.dataTransfer.files].filter((f) => f.type.startsWith("image/")));
  });
  $("coco-export").addEventListener("click", () => guarded($("coco-error"), async () => {
    download("featuregap-boxes.coco.json", await blob("/api/export/coco"));
  }));
  $("coco-input").addEventListener("change", async (e) => {
    const file = e.target.files[0];
    e.target.value = "";
    if (!file) return;
    await guarded($("coco-error"), async () => {
      const result = await jobs.track("Import", () => upload("/api/import/coco", file, {}));
      const skipped = result.skipped?.length ? `; skipped ${result.skipped.length}: ${result.skipped.slice(0, 3).join("; ")}` : "";
      const present = result.boxes_present ? ` (${result.boxes_present} already there)` : "";
      $("coco-error").textContent = `Imported ${result.boxes_added} boxes${present} on ${result.images_matched} images${skipped}`;
      await refreshGallery();
      changed();
    });
  });
}

async function uploadAll(files) {
  const label = $("upload-label").value.trim();
  rememberLabel(label);
  await Promise.all(files.map(async (file) => {
    const item = document.createElement("li");
    const bar = Object.assign(document.createElement("progress"), { max: 1, value: 0 });
    const text = Object.assign(document.createElement("span"), { textContent: file.name });
    const status = Object.assign(document.createElement("span"), { className: "error" });
    item.append(text, bar, status);
    $("uploads").append(item);
    try {
      await upload("/api/images", file, { label }, (fraction) => { bar.value = fraction; });
      item.remove();
    } catch (err) {
      showError(status, err);
    }
  }));
  await refreshGallery();
}

export async function refreshGallery() {
  await guarded($("gallery-error"), async () => {
    const [images, boxes] = await Promise.all([get("/api/images"), get("/api/boxes")]);
    const labels = new Map();
    for (const box of boxes) {
      if (!labels.has(box.image_id)) labels.set(box.image_id, new Set());
      labels.get(box.image_id).add(box.label);
    }
    $("cards").replaceChildren(...images.map((image) => card(image, labels.get(image.id))));
  });
}

function card(image, labels) {
  const li = Object.assign(document.createElement("li"), { className: "card" });
  li.dataset.imageId = image.id;
  const img = Object.assign(document.createElement("img"), { alt: image.filename });
  imageUrl(`/api/images/${image.id}/thumbnail`).then((url) => { img.src = url; }).catch(() => {});
  img.addEventListener("click", () => openImage(image.id));
  const name = Object.assign(document.createElement("div"), { className: "name", textContent: image.filename });
  const tags = [...(labels || [])].join(", ") || image.label || "no labels";
  const meta = Object.assign(document.createElement("div"), {
    className: "meta", textContent: `${image.width}×${image.height} · ${image.box_count} box${image.box_count === 1 ? "" : "es"} · ${tags}`,
  });
  const open = Object.assign(document.createElement("button"), { type: "button", textContent: "Open" });
  open.addEventListener("click", () => openImage(image.id));
  const remove = Object.assign(document.createElement("button"), { type: "button", textContent: "Delete" });
  const error = Object.assign(document.createElement("p"), { className: "error" });
  remove.setAttribute("aria-label", `Delete ${image.filename}`);
  remove.addEventListener("click", () => guarded(error, async () => {
    if (!confirm(`Delete ${image.filename} and its boxes?`)) return;
    await del(`/api/images/${image.id}`);
    forgetImageUrls(`/api/images/${image.id}/`);
    await refreshGallery();
    changed();
  }));
  const actions = Object.assign(document.createElement("div"), { className: "actions" });
  actions.append(open, remove);
  li.append(img, name, meta, actions, error);
  return li;
}
