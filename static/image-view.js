// The image view: the box editor, its active label and label bar, the explicit relabel,
// draw mode, zoom, undo/redo and keyboard shortcuts. The active label (#box-label, or a pick
// in the label bar) only names NEW boxes; an existing box's label changes only through
// "Relabel selected" (#relabel-form) or a double-click on it.
import { del, get, imageUrl, patch, post } from "./api.js";
import { BoxEditor } from "./boxes-editor.js";
import { barLabels, HOTKEYS, renderLabelBar } from "./label-bar.js";
import { knownLabels, onLabelColours, setLabelColours } from "./palette.js";
import { $, fillLabelList, guarded, rememberLabel, showError } from "./ui.js";

const DEFAULT_LABEL = "object";
let editor = null;
let current = null;

const store = {
  create: (image, box) => post(`/api/images/${image.id}/boxes`, box),
  update: (id, fields) => patch(`/api/boxes/${id}`, fields),
  remove: (id) => del(`/api/boxes/${id}`),
  get: (id) => get(`/api/boxes/${id}`),
};

export function currentImage() {
  return current;
}

export function currentBoxes() {
  return editor ? editor.boxes : [];
}

const activeLabel = () => $("box-label").value.trim() || DEFAULT_LABEL;

function showLabels() {
  if (!editor) return;
  renderLabelBar($("label-bar"), {
    rows: knownLabels(), boxes: editor.boxes, active: activeLabel(), onPick: pickLabel,
  });
}

// Make `label` the active label (the label bar, or its hotkey 1–9).
function pickLabel(label) {
  $("box-label").value = label;
  rememberLabel(label);
  fillLabelList($("recent-labels"));
  showLabels();
}

function showZoom({ scale, fit }) {
  const percent = `${Math.round(scale * 1000) / 10}%`;
  $("zoom-level").textContent = fit ? `= ${percent}` : "";  // else the select shows it
  const preset = [...$("zoom").options].find((o) => o.value === "fit" ? fit : !fit && Number(o.value) === scale);
  $("zoom-custom").textContent = percent;
  $("zoom").value = preset ? preset.value : "custom";
}

export function initImageView({ onChange }) {
  editor = new BoxEditor($("editor-stage"), store, {
    getLabel: () => {
      const label = activeLabel();
      rememberLabel(label);
      fillLabelList($("recent-labels"));
      return label;
    },
    onSelect: (box) => {
      $("selected-box").textContent = box
        ? `Box ${box.id}: x ${box.x}, y ${box.y}, w ${box.w}, h ${box.h} (image pixels), label “${box.label}”`
        : "No box selected.";
      $("relabel").value = box ? box.label : "";
      $("relabel").disabled = !box;
      $("relabel-apply").disabled = !box;
    },
    onRelabel: () => {
      $("relabel").focus();
      $("relabel").select();
    },
    onChange: () => { showError($("editor-error"), null); showLabels(); onChange(); },
    onError: (err) => showError($("editor-error"), err),
    onView: showZoom,
    onHistory: (history) => {
      $("undo").disabled = !history?.canUndo;
      $("redo").disabled = !history?.canRedo;
    },
  });
  // A labels refresh (counts, colours of new labels): the bar and the boxes as drawn.
  onLabelColours(() => { showLabels(); editor.recolour(); });
  $("box-label").addEventListener("input", showLabels);
  $("box-label").addEventListener("change", () => {
    const label = $("box-label").value.trim();
    if (!label) return;
    rememberLabel(label);
    fillLabelList($("recent-labels"));
  });
  $("relabel-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const label = $("relabel").value.trim();
    if (!label) return;
    rememberLabel(label);
    fillLabelList($("recent-labels"));
    editor.relabelSelected(label);
  });
  $("draw-mode").addEventListener("click", () => setDrawMode(!editor.drawMode));
  $("zoom").addEventListener("change", () => {
    if ($("zoom").value !== "custom") editor.setZoom($("zoom").value);
  });
  $("zoom-fit").addEventListener("click", () => editor.setZoom("fit"));
  $("zoom-one").addEventListener("click", () => editor.setZoom(1));
  $("undo").addEventListener("click", () => editor.undo());
  $("redo").addEventListener("click", () => editor.redo());
  $("delete-box").addEventListener("click", () => editor.deleteSelected());
  $("close-viewer").addEventListener("click", () => { $("viewer").hidden = true; current = null; });
  document.addEventListener("keydown", onKey);
  fillLabelList($("recent-labels"));
}

function setDrawMode(on) {
  editor.setDrawMode(on);
  $("draw-mode").setAttribute("aria-pressed", String(editor.drawMode));
}

function onKey(event) {
  if ($("viewer").hidden || !editor) return;
  const typing = event.target.closest("input, select, textarea");
  const key = event.key.toLowerCase();
  if ((event.ctrlKey || event.metaKey) && !event.altKey && (key === "z" || key === "y") && !typing) {
    event.preventDefault();
    if (key === "y" || event.shiftKey) editor.redo();
    else editor.undo();
    return;
  }
  if (typing) return;
  const plain = !event.ctrlKey && !event.metaKey && !event.altKey;
  const digit = /^[1-9]$/.test(event.key) ? Number(event.key) : 0;
  if (plain && digit && digit <= HOTKEYS) {
    const label = barLabels(knownLabels(), activeLabel())[digit - 1];
    if (label !== undefined) {
      event.preventDefault();
      pickLabel(label);
    }
    return;
  }
  const step = event.shiftKey ? 10 : 1;
  const moves = { ArrowLeft: [-step, 0], ArrowRight: [step, 0], ArrowUp: [0, -step], ArrowDown: [0, step] };
  if (event.key === "Delete" || event.key === "Backspace") {
    event.preventDefault();
    editor.deleteSelected();
  } else if (event.key === "Escape") {
    editor.select(null);
  } else if (event.key === "l" || event.key === "L") {
    event.preventDefault();
    $("box-label").focus();
  } else if ((event.key === "n" || event.key === "N") && plain) {
    event.preventDefault();
    setDrawMode(!editor.drawMode);
  } else if ((event.key === "f" || event.key === "F") && plain) {
    event.preventDefault();
    editor.setZoom("fit");
  } else if (moves[event.key] && editor.selected) {
    event.preventDefault();
    editor.nudge(...moves[event.key]);
  }
}

// Open an image in the editor; `boxId` selects one of its boxes (a crop clicked elsewhere).
export async function openImage(imageId, { boxId } = {}) {
  await guarded($("editor-error"), async () => {
    const [image, boxes, labels] = await Promise.all([
      get(`/api/images/${imageId}`), get(`/api/images/${imageId}/boxes`), get("/api/labels"),
    ]);
    current = image;
    setLabelColours(labels);
    fillLabelList($("recent-labels"), labels.map((l) => l.label));
    $("viewer").hidden = false;
    $("viewer-title").textContent = `${image.filename} (${image.width}×${image.height})`;
    $("heatmap-view").hidden = true;
    $("predictions-view").hidden = true;
    await editor.open(image, await imageUrl(`/api/images/${image.id}/file`), boxes);
    showLabels();
    if (boxId !== undefined && boxes.some((b) => b.id === boxId)) editor.select(boxId);
    $("viewer").scrollIntoView({ block: "start" });
  });
}
