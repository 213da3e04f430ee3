// Box editor: an SVG overlay whose viewBox is the image's own pixel grid, so every
// coordinate it reads or writes is in IMAGE pixels, whatever the zoom or display scale.
// Zoom and pan live in StageView; undo and redo steps in EditHistory.
import { EditHistory } from "./edit-history.js";
import { labelColour } from "./palette.js";
import { StageView } from "./stage-view.js";

const SVG_NS = "http://www.w3.org/2000/svg";
const HANDLES = ["nw", "n", "ne", "e", "se", "s", "sw", "w"];
const CORNERS = ["nw", "ne", "se", "sw"];
const HANDLE_PX = 10;  // a handle's side on screen, at every zoom
// A box narrower than this on screen gets only its corner handles, outside it, so its body
// stays free to grab (a 40×40 box on a 4800×3202 photo is 8 screen pixels at fit).
const SMALL_PX = 3 * HANDLE_PX;
const MIN_SIZE = 2;
const DOUBLE_MS = 500;

function svgEl(name, attrs) {
  const el = document.createElementNS(SVG_NS, name);
  for (const [key, value] of Object.entries(attrs)) el.setAttribute(key, value);
  return el;
}

const clamp = (v, lo, hi) => Math.min(Math.max(v, lo), hi);

// Geometry of a box after dragging `handle` by (dx, dy), normalised to positive size.
export function resized(box, handle, dx, dy) {
  let x0 = box.x, y0 = box.y, x1 = box.x + box.w, y1 = box.y + box.h;
  if (handle.includes("w")) x0 += dx;
  if (handle.includes("e")) x1 += dx;
  if (handle.includes("n")) y0 += dy;
  if (handle.includes("s")) y1 += dy;
  return { x: Math.min(x0, x1), y: Math.min(y0, y1), w: Math.abs(x1 - x0), h: Math.abs(y1 - y0) };
}

export class BoxEditor {
  // store: {create(image, fields) -> saved box, update(id, fields) -> saved box, remove(id),
  // get(id) -> box}, each async; the editor keeps its boxes as the store answered them.
  // onRelabel(box): the user asked to relabel `box` (double-click on it).
  // onView({scale, fit}): the zoom changed. onHistory(history): what can be undone changed.
  constructor(stage, store, options = {}) {
    const { getLabel, onSelect, onChange, onError, onRelabel, onView, onHistory } = options;
    this.stage = stage;
    this.store = store;
    this.getLabel = getLabel || (() => "");
    this.onSelect = onSelect || (() => {});
    this.onChange = onChange || (() => {});
    this.onError = onError || ((err) => console.warn(err));
    this.onRelabel = onRelabel || (() => {});
    this.onView = onView || (() => {});
    this.onHistory = onHistory || (() => {});
    this.image = null;
    this.boxes = [];
    this.selectedId = null;
    this.history = null;
    this.drag = null;
    this.drawMode = false;
    this.img = document.createElement("img");
    this.img.className = "editor-image";
    this.img.alt = "image being annotated";
    this.img.draggable = false;
    this.svg = svgEl("svg", { class: "editor-overlay", "aria-label": "box overlay", tabindex: "0" });
    this.svg.setAttribute("preserveAspectRatio", "none");
    this.canvas = document.createElement("div");
    this.canvas.className = "editor-canvas";
    this.canvas.append(this.img, this.svg);
    stage.replaceChildren(this.canvas);
    this.svg.addEventListener("pointerdown", (e) => this.#down(e));
    this.svg.addEventListener("pointermove", (e) => {
      this.svg.classList.toggle("force-draw", e.shiftKey);
      this.#move(e);
    });
    this.svg.addEventListener("pointerup", (e) => this.#up(e));
    this.svg.addEventListener("pointercancel", () => this.#cancel());
    // Shift held: the next drag draws, so show the drawing cursor over boxes too.
    const shift = (e) => this.svg.classList.toggle("force-draw", e.shiftKey);
    window.addEventListener("keydown", shift);
    window.addEventListener("keyup", shift);
    this.view = new StageView(stage, this.canvas, this.img, (state) => {
      this.render();
      this.onView(state);
    });
  }

  // "fit" or screen pixels per image pixel (see StageView.setZoom).
  setZoom(zoom) {
    this.view.setZoom(zoom);
  }

  // Draw mode: every drag draws a box, even one starting inside another (nested boxes).
  setDrawMode(on) {
    this.drawMode = Boolean(on);
    this.svg.classList.toggle("draw-mode", this.drawMode);
  }

  async open(image, url, boxes) {
    delete this.stage.dataset.shown;
    this.image = image;
    this.boxes = boxes.map((b) => ({ ...b }));
    this.selectedId = null;
    this.drag = null;
    this.history = new EditHistory(image);
    this.svg.setAttribute("viewBox", `0 0 ${image.width} ${image.height}`);
    this.img.src = url;
    await this.img.decode().catch(() => {});
    this.view.show(image.width, image.height);
    this.stage.dataset.shown = String(image.id);  // laid out: tests and tools may measure now
    this.onSelect(null);
    this.onHistory(this.history);
  }

  get selected() {
    return this.boxes.find((b) => b.id === this.selectedId) || null;
  }

  // Client (screen) coordinates to image pixels through the overlay's own transform.
  toImage(clientX, clientY) {
    const point = this.svg.createSVGPoint();
    point.x = clientX;
    point.y = clientY;
    const p = point.matrixTransform(this.svg.getScreenCTM().inverse());
    return { x: clamp(p.x, 0, this.image.width), y: clamp(p.y, 0, this.image.height) };
  }

  // Image pixels per screen pixel, to keep handles and strokes a constant size on screen.
  get unit() {
    return this.view.unit;
  }

  select(id) {
    this.selectedId = id;
    this.render();
    this.onSelect(this.selected);
  }

  #down(event) {
    if (!this.image) return;
    if (this.view.wantsPan(event)) {
      event.preventDefault();
      this.drag = { mode: "pan" };
      this.view.startPan(event);
      this.svg.setPointerCapture(event.pointerId);
      return;
    }
    if (event.button !== 0) return;
    event.preventDefault();
    this.svg.focus({ preventScroll: true });  // so Delete and Ctrl+Z reach the editor
    const start = this.toImage(event.clientX, event.clientY);
    const target = event.target;
    const id = target.closest("[data-id]")?.dataset.id;
    const box = this.boxes.find((b) => String(b.id) === id);
    if (this.drawMode || event.shiftKey) {
      // Forced drawing: a click without a drag still selects the box under the pointer.
      this.drag = { mode: "draw", start, draft: { x: start.x, y: start.y, w: 0, h: 0 }, under: box };
    } else if (target.dataset.handle && box) {
      this.drag = { mode: "resize", handle: target.dataset.handle, box, before: { ...box }, start };
    } else if (box) {
      this.select(box.id);
      this.drag = { mode: "move", box, before: { ...box }, start };
    } else {
      this.select(null);
      this.drag = { mode: "draw", start, draft: { x: start.x, y: start.y, w: 0, h: 0 } };
    }
    this.svg.setPointerCapture(event.pointerId);
    this.#doublePress(box, event);
  }

  #move(event) {
    if (!this.drag) return;
    if (this.drag.mode === "pan") {
      this.view.movePan(event);
      return;
    }
    const p = this.toImage(event.clientX, event.clientY);
    const { start, before } = this.drag;
    const W = this.image.width, H = this.image.height;
    if (this.drag.mode === "draw") {
      this.drag.draft = {
        x: Math.min(start.x, p.x), y: Math.min(start.y, p.y),
        w: Math.abs(p.x - start.x), h: Math.abs(p.y - start.y),
      };
    } else if (this.drag.mode === "move") {
      Object.assign(this.drag.box, {
        x: clamp(before.x + p.x - start.x, 0, W - before.w),
        y: clamp(before.y + p.y - start.y, 0, H - before.h),
      });
    } else {
      Object.assign(this.drag.box, resized(before, this.drag.handle, p.x - start.x, p.y - start.y));
    }
    this.render();
  }

  #cancel() {
    const drag = this.drag;
    this.drag = null;
    this.view.endPan();
    if (drag?.before) Object.assign(drag.box, pick(drag.before));
    this.render();
  }

  async #up(event) {
    const drag = this.drag;
    this.drag = null;
    if (!drag) return;
    this.svg.releasePointerCapture(event.pointerId);
    if (drag.mode === "pan") {
      this.view.endPan();
      return;
    }
    if (drag.mode === "draw") {
      const geometry = rounded(drag.draft);
      this.render();
      if (geometry.w < MIN_SIZE || geometry.h < MIN_SIZE) {
        if ("under" in drag) this.select(drag.under ? drag.under.id : null);
        this.#released(drag.under, false);
        return;
      }
      this.#released(null, true);
      await this.create({ ...geometry, label: this.getLabel() });
      return;
    }
    const geometry = rounded(drag.box);
    Object.assign(drag.box, geometry);
    const before = pick(drag.before);
    if (["x", "y", "w", "h"].every((k) => before[k] === geometry[k])) {
      this.render();
      this.#released(drag.box, false);
      return;
    }
    this.#released(drag.box, true);
    await this.update(drag.box.id, geometry, before);
  }

  // The three edits a user makes; each is saved through the store, then recorded for undo.
  async create(fields) {
    const saved = await this.#create(fields);
    if (saved) this.#record({ kind: "create", id: saved.id, box: pick(saved) });
    return saved;
  }

  // `before`: the box as it was (its x, y, w, h and label), restored if the store refuses.
  async update(id, fields, before) {
    const saved = await this.#update(id, fields, before);
    if (saved) this.#record({ kind: "update", id, before: pick(before), after: pick(saved) });
    return saved;
  }

  async remove(id) {
    const box = this.boxes.find((b) => b.id === id);
    if (box && await this.#remove(id)) this.#record({ kind: "delete", id, box: pick(box) });
  }

  #record(step) {
    this.history?.record(step);
    this.onHistory(this.history);
  }

  async #create(fields) {
    try {
      const saved = await this.store.create(this.image, fields);
      this.boxes.push(saved);
      this.select(saved.id);
      this.onChange(this.boxes);
      return saved;
    } catch (err) {
      this.onError(err);
      this.render();
      return null;
    }
  }

  async #update(id, fields, before) {
    const box = this.boxes.find((b) => b.id === id);
    let saved = null;
    try {
      saved = await this.store.update(id, fields);
      Object.assign(box, saved);
      this.onChange(this.boxes);
    } catch (err) {
      if (box && before) Object.assign(box, pick(before));
      this.onError(err);
    }
    this.render();
    this.onSelect(this.selected);
    return saved;
  }

  async #remove(id) {
    try {
      await this.store.remove(id);
      this.boxes = this.boxes.filter((b) => b.id !== id);
      if (this.selectedId === id) this.selectedId = null;
      this.onChange(this.boxes);
      this.select(this.selectedId);
      return true;
    } catch (err) {
      this.onError(err);
      return false;
    }
  }

  deleteSelected() {
    if (this.selectedId !== null) return this.remove(this.selectedId);
    return Promise.resolve();
  }

  // The one way a box's label changes: an explicit relabel of the selected box. The label
  // that new boxes take (getLabel) never touches existing boxes.
  relabelSelected(label) {
    const box = this.selected;
    if (box && label && box.label !== label) return this.update(box.id, { label }, pick(box));
    return Promise.resolve();
  }

  // A second press on the same box within DOUBLE_MS asks to relabel it. Counted here, not
  // with "dblclick": the press re-renders the overlay and captures the pointer, so the
  // browser's click events land on the overlay, or not at all.
  // Only clicks count: a press that drags (moves, resizes or draws) ends the sequence, and
  // the relabel is asked for when the second press is released without a drag.
  #doublePress(box, event) {
    const last = this.lastPress;
    this.lastPress = box ? { id: box.id, time: event.timeStamp } : null;
    this.pendingRelabel = Boolean(box && last && last.id === box.id
      && event.timeStamp - last.time <= DOUBLE_MS);
  }

  #released(box, dragged) {
    const relabel = this.pendingRelabel && !dragged && box;
    this.pendingRelabel = false;
    if (dragged) this.lastPress = null;
    if (!relabel) return;
    this.lastPress = null;
    this.select(box.id);
    this.onRelabel(box);
  }

  nudge(dx, dy) {
    const box = this.selected;
    if (!box) return Promise.resolve();
    const before = pick(box);
    const x = clamp(box.x + dx, 0, this.image.width - box.w);
    const y = clamp(box.y + dy, 0, this.image.height - box.h);
    return this.update(box.id, { x, y }, before);
  }

  // Undo (redo) the last create, move, resize, relabel or delete of this image, through the
  // store like any other edit. Chained, so a second Ctrl+Z waits for the first one's answer
  // (and the new id of a box it brought back).
  undo() {
    return this.#queue(() => this.#step(true));
  }

  redo() {
    return this.#queue(() => this.#step(false));
  }

  #queue(action) {
    this.pending = (this.pending || Promise.resolve()).then(action);
    return this.pending;
  }

  async #step(back) {
    const history = this.history;
    const step = history && (back ? history.takeUndo() : history.takeRedo());
    if (!step) return;
    if (await this.#replay(step, back)) {
      if (back) history.undone(step);
      else history.redone(step);
    }
    this.onHistory(history);
  }

  // Apply `step` backwards (undo) or forwards (redo); false when the store refused it or
  // its box is gone (deleted in another tab or through the API), and the step is dropped.
  async #replay(step, back) {
    const makes = step.kind === "create" ? !back : step.kind === "delete" ? back : false;
    if (makes) {
      const { id: oldId } = step;
      const saved = await this.#create(step.box);
      if (!saved) return false;
      step.id = saved.id;
      this.history.renumber(oldId, saved.id);
      return true;
    }
    // The store is the truth: the box must still be as this step left it (or, redoing, as
    // it found it), else another tab or tool changed it since and the step would undo that.
    const what = back ? "undone" : "redone";
    const expected = step.kind !== "update" ? step.box : back ? step.after : step.before;
    const box = this.boxes.find((b) => b.id === step.id);
    const current = box && await this.#stored(step.id);
    if (!box || current === undefined) {
      this.onError(new Error(`box ${step.id} is no longer on this image, so that step cannot be ${what}`));
      return false;
    }
    if (current === null) return false;  // the store could not be asked; its error is shown
    if (!same(current, expected)) {
      Object.assign(box, current);
      this.render();
      this.onSelect(this.selected);
      this.onError(new Error(`box ${step.id} was changed elsewhere since this edit, so that step cannot be ${what}`));
      return false;
    }
    if (step.kind === "update") return Boolean(await this.#update(step.id, back ? step.before : step.after, pick(box)));
    return this.#remove(step.id);
  }

  // The box as the store has it now; undefined when it is gone, null on any other error.
  async #stored(id) {
    try {
      return await this.store.get(id);
    } catch (err) {
      if (err.status === 404) return undefined;
      this.onError(err);
      return null;
    }
  }

  render() {
    if (!this.image) return;
    const unit = this.unit;
    // Largest first, so a box nested inside another lies on top and can be picked; the
    // selected box's handles come last, above every box.
    const byArea = [...this.boxes].sort((a, b) => b.w * b.h - a.w * a.h);
    const nodes = byArea.map((box) => this.#boxNode(box, unit));
    const selected = this.selected;
    if (selected) nodes.push(this.#handles(selected, unit));
    if (this.drag?.mode === "draw") {
      const d = this.drag.draft;
      nodes.push(svgEl("rect", {
        class: "box-draft", x: d.x, y: d.y, width: d.w, height: d.h,
        "stroke-width": 2 * unit,
      }));
    }
    this.svg.replaceChildren(...nodes);
  }

  // New label colours (a labels refresh) on the boxes as drawn, without rebuilding them.
  recolour() {
    for (const group of this.svg.querySelectorAll(".box[data-id]")) {
      const box = this.boxes.find((b) => String(b.id) === group.dataset.id);
      if (!box) continue;
      const colour = labelColour(box.label);
      for (const el of group.querySelectorAll(".box-rect, .box-label")) el.setAttribute("stroke", colour);
    }
  }

  #boxNode(box, unit) {
    const colour = labelColour(box.label);
    const selected = box.id === this.selectedId;
    const group = svgEl("g", { class: selected ? "box selected" : "box", "data-id": box.id });
    group.append(svgEl("rect", {
      class: "box-rect", x: box.x, y: box.y, width: box.w, height: box.h,
      stroke: colour, "stroke-width": (selected ? 3 : 2) * unit,
    }));
    // Inside the box when it has room on screen, else just above it (below at the top edge).
    const roomy = box.w / unit >= 40 && box.h / unit >= 28;
    const y = roomy ? box.y + 20 * unit : box.y >= 22 * unit ? box.y - 6 * unit : box.y + box.h + 18 * unit;
    const text = svgEl("text", {
      class: "box-label", x: roomy ? box.x + 8 * unit : box.x, y,
      "font-size": 14 * unit, fill: "#fff", stroke: colour, "stroke-width": 4 * unit,
    });
    text.textContent = box.label || "(no label)";
    group.append(text);
    return group;
  }

  #handles(box, unit) {
    const group = svgEl("g", { class: "handles", "data-id": box.id });
    const size = HANDLE_PX * unit;
    // On a small box the corner handles sit outside its corners: the body stays grabbable.
    const small = Math.min(box.w, box.h) / unit < SMALL_PX;
    const out = small ? size / 2 : 0;
    for (const handle of small ? CORNERS : HANDLES) {
      const hx = handle.includes("w") ? box.x - out : handle.includes("e") ? box.x + box.w + out : box.x + box.w / 2;
      const hy = handle.includes("n") ? box.y - out : handle.includes("s") ? box.y + box.h + out : box.y + box.h / 2;
      group.append(svgEl("rect", {
        class: `handle handle-${handle}`, "data-handle": handle,
        x: hx - size / 2, y: hy - size / 2, width: size, height: size, "stroke-width": unit,
      }));
    }
    return group;
  }
}

function rounded(b) {
  const x = Math.round(b.x), y = Math.round(b.y);
  return { x, y, w: Math.round(b.x + b.w) - x, h: Math.round(b.y + b.h) - y };
}

function pick(b) {
  return { x: b.x, y: b.y, w: b.w, h: b.h, label: b.label };
}

function same(a, b) {
  return ["x", "y", "w", "h", "label"].every((key) => a[key] === b[key]);
}
