// The gallery: upload (picker or drop, several at once, with progress), cards, delete, COCO.
import { blob, del, download, forgetImageUrls, get, upload } from "./api.js";
import * as jobs from "./jobs.js";
import { forgetLazy, lazyImage, whenNear } from "./lazy.js";
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
  $("gallery-label").addEventListener("change", () => refreshGallery());
  rearm = whenNear($("cards-more"), loadMore);
  $("coco-export").addEventListener("click", () => guarded($("coco-error"), async () => {
    download("featuregap-boxes.coco.json", await blob("/api/export/coco"));
  }));
  $("coco-input").addEventListener("change", async (e) => {
    const file = e.target.files[0];
    e.target.value = "";
    if (!file) return;
    await guarded($("coco-error"), async () => {
      const result = await jobs.track("Import", () => upload("/api/import/coco", file, {}), $("gallery-jobs"));
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

// The gallery pages through GET /api/images with its cursor as the list's end scrolls into
// view, and loads a thumbnail only when its card comes near the screen: 10,000 images cost
// a page of cards and a screenful of thumbnails, not 10,000 requests.
const PAGE = 60;
const listing = { generation: 0, cursor: null, done: false, loading: null, shown: 0, total: 0 };
let rearm = () => {};

export function fillGalleryLabels(labels) {
  const select = $("gallery-label");
  const keep = select.value;
  select.replaceChildren(new Option("All images", ""), ...labels.map((l) =>
    new Option(`${l.label} (${l.images} image${l.images === 1 ? "" : "s"})`, l.label, false, l.label === keep)));
  if (select.value !== keep) refreshGallery();  // the filtered label is gone
}

function showCount() {
  const { shown, total, done } = listing;
  $("gallery-count").textContent = total === 0 ? "No images yet."
    : `${total} image${total === 1 ? "" : "s"}${done ? "" : ` · showing ${shown}, scroll for more`}`;
}

async function loadMore() {
  if (listing.loading || listing.done) return listing.loading;
  const generation = listing.generation;
  const params = new URLSearchParams({ limit: String(PAGE) });
  if (listing.cursor) params.set("cursor", listing.cursor);
  if ($("gallery-label").value) params.set("box_label", $("gallery-label").value);
  listing.loading = guarded($("gallery-error"), async () => {
    const page = await get(`/api/images?${params}`);
    if (generation !== listing.generation) return;  // a refresh started meanwhile
    $("cards").append(...page.items.map((image) => card(image)));
    Object.assign(listing, { cursor: page.next_cursor, done: !page.next_cursor, total: page.total,
      shown: listing.shown + page.items.length });
    showCount();
  }).finally(() => {
    if (generation !== listing.generation) return;
    listing.loading = null;
    rearm(!listing.done);
  });
  return listing.loading;
}

// Redraw one image's card in place (its boxes changed), keeping the scroll position.
export async function refreshCard(imageId) {
  const old = $("cards").querySelector(`.card[data-image-id="${imageId}"]`);
  if (!old) return;
  await guarded($("gallery-error"), async () => {
    const fresh = card(await get(`/api/images/${imageId}`));
    const img = old.querySelector("img");
    if (img.src) {  // keep the thumbnail already shown
      forgetLazy(fresh.querySelector("img"));
      fresh.querySelector("img").src = img.src;
    }
    old.replaceWith(fresh);
  });
}

// Start the listing again from its first page (after uploads, imports or a filter change).
export async function refreshGallery() {
  listing.generation += 1;
  Object.assign(listing, { cursor: null, done: false, loading: null, shown: 0, total: 0 });
  $("cards").replaceChildren();
  await loadMore();
}

function card(image) {
  const li = Object.assign(document.createElement("li"), { className: "card" });
  li.dataset.imageId = image.id;
  const img = Object.assign(document.createElement("img"), { alt: image.filename });
  lazyImage(img, `/api/images/${image.id}/thumbnail`);
  img.addEventListener("click", () => openImage(image.id));
  const name = Object.assign(document.createElement("div"), { className: "name", textContent: image.filename });
  const tags = image.box_labels.join(", ") || image.label || "no labels";
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
    li.remove();
    listing.shown -= 1;
    listing.total -= 1;
    showCount();
    changed();
  }));
  const actions = Object.assign(document.createElement("div"), { className: "actions" });
  actions.append(open, remove);
  li.append(img, name, meta, actions, error);
  return li;
}
