// The image view: the box editor, its active label, the explicit relabel, draw mode and
// keyboard shortcuts. The active label (#box-label) only names NEW boxes; an existing box's
// label changes only through "Relabel selected" (#relabel-form) or a double-click on it.
import { del, get, imageUrl, patch, post } from "./api.js";
import { BoxEditor } from "./boxes-editor.js";
import { $, fillLabelList, guarded, rememberLabel, showError } from "./ui.js";

const DEFAULT_LABEL = "object";
let editor = null;
let current = null;

const store = {
  create: (image, box) => post(`/api/images/${image.id}/boxes`, box),
  update: (id, fields) => patch(`/api/boxes/${id}`, fields),
  remove: (id) => del(`/api/boxes/${id}`),
};

export function currentImage() {
  return current;
}

export function currentBoxes() {
  return editor ? editor.boxes : [];
}

export function initImageView({ onChange }) {
  editor = new BoxEditor($("editor-stage"), store, {
    getLabel: () => {
      const label = $("box-label").value.trim() || DEFAULT_LABEL;
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
    onChange: () => { showError($("editor-error"), null); onChange(); },
    onError: (err) => showError($("editor-error"), err),
  });
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
  $("zoom").addEventListener("change", () => editor.setZoom($("zoom").value));
  $("undo").addEventListener("click", () => editor.undo());
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
  if ((event.ctrlKey || event.metaKey) && event.key.toLowerCase() === "z" && !typing) {
    event.preventDefault();
    editor.undo();
    return;
  }
  if (typing) return;
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
  } else if ((event.key === "n" || event.key === "N") && !event.ctrlKey && !event.metaKey) {
    event.preventDefault();
    setDrawMode(!editor.drawMode);
  } else if (moves[event.key] && editor.selected) {
    event.preventDefault();
    editor.nudge(...moves[event.key]);
  }
}

export async function openImage(imageId) {
  await guarded($("editor-error"), async () => {
    const [image, boxes, labels] = await Promise.all([
      get(`/api/images/${imageId}`), get(`/api/boxes?image_id=${imageId}`), get("/api/labels"),
    ]);
    current = image;
    fillLabelList($("recent-labels"), labels.map((l) => l.label));
    $("viewer").hidden = false;
    $("viewer-title").textContent = `${image.filename} (${image.width}×${image.height})`;
    $("heatmap-view").hidden = true;
    $("predictions-view").hidden = true;
    await editor.open(image, await imageUrl(`/api/images/${image.id}/file`), boxes);
    $("viewer").scrollIntoView({ block: "start" });
  });
}
