// Box editor: an SVG overlay whose viewBox is the image's own pixel grid, so every
// coordinate it reads or writes is in IMAGE pixels, whatever the display scale.
import { labelColour } from "./palette.js";

const SVG_NS = "http://www.w3.org/2000/svg";
const HANDLES = ["nw", "n", "ne", "e", "se", "s", "sw", "w"];
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
  // store: {create(image, fields) -> saved box, update(id, fields) -> saved box, remove(id)},
  // each async; the editor keeps its boxes as the store answered them.
  // onRelabel(box): the user asked to relabel `box` (double-click on it).
  constructor(stage, store, { getLabel, onSelect, onChange, onError, onRelabel } = {}) {
    this.stage = stage;
    this.store = store;
    this.getLabel = getLabel || (() => "");
    this.onSelect = onSelect || (() => {});
    this.onChange = onChange || (() => {});
    this.onError = onError || ((err) => console.warn(err));
    this.onRelabel = onRelabel || (() => {});
    this.image = null;
    this.boxes = [];
    this.selectedId = null;
    this.history = [];
    this.remap = new Map();
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
    this.zoom = "fit";
    this.svg.addEventListener("pointerdown", (e) => this.#down(e));
    this.svg.addEventListener("pointermove", (e) => {
      this.svg.classList.toggle("force-draw", e.shiftKey);
      this.#move(e);
    });
    this.svg.addEventListener("pointerup", (e) => this.#up(e));
    this.svg.addEventListener("pointercancel", () => { this.drag = null; this.render(); });
    // Shift held: the next drag draws, so show the drawing cursor over boxes too.
    const shift = (e) => this.svg.classList.toggle("force-draw", e.shiftKey);
    window.addEventListener("keydown", shift);
    window.addEventListener("keyup", shift);
    new ResizeObserver(() => this.render()).observe(this.img);
    window.addEventListener("resize", () => this.layout());
  }

  // "fit": as large as the stage's width and 70% of the window's height allow; or a factor.
  setZoom(zoom) {
    this.zoom = zoom;
    this.layout();
  }

  // Draw mode: every drag draws a box, even one starting inside another (nested boxes).
  setDrawMode(on) {
    this.drawMode = Boolean(on);
    this.svg.classList.toggle("draw-mode", this.drawMode);
  }

  layout() {
    if (!this.image) return;
    const { width, height } = this.image;
    const scale = this.zoom === "fit"
      ? Math.min(this.stage.clientWidth / width, (0.7 * window.innerHeight) / height)
      : Number(this.zoom);
    this.img.style.width = `${Math.max(1, width * scale)}px`;
    this.img.style.height = `${Math.max(1, height * scale)}px`;
    this.render();
  }

  async open(image, url, boxes) {
    this.image = image;
    this.boxes = boxes.map((b) => ({ ...b }));
    this.selectedId = null;
    this.history = [];
    this.remap.clear();
    this.svg.setAttribute("viewBox", `0 0 ${image.width} ${image.height}`);
    this.img.src = url;
    await this.img.decode().catch(() => {});
    this.layout();
    this.onSelect(null);
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

  // Image pixels per screen pixel, to keep handles a constant size on screen.
  get unit() {
    const shown = this.svg.getBoundingClientRect().width;
    return this.image && shown ? this.image.width / shown : 1;
  }

  select(id) {
    this.selectedId = id;
    this.render();
    this.onSelect(this.selected);
  }

  #down(event) {
    if (!this.image || event.button !== 0) return;
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

  async #up(event) {
    const drag = this.drag;
    this.drag = null;
    if (!drag) return;
    this.svg.releasePointerCapture(event.pointerId);
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

  async create(fields, { record = true } = {}) {
    try {
      const saved = await this.store.create(this.image, fields);
      this.boxes.push(saved);
      if (record) this.history.push({ kind: "create", id: saved.id });
      this.select(saved.id);
      this.onChange(this.boxes);
      return saved;
    } catch (err) {
      this.onError(err);
      this.render();
      return null;
    }
  }

  async update(id, fields, before, { record = true } = {}) {
    const box = this.boxes.find((b) => b.id === id);
    try {
      const saved = await this.store.update(id, fields);
      Object.assign(box, saved);
      if (record) this.history.push({ kind: "update", id, before });
      this.onChange(this.boxes);
    } catch (err) {
      if (box && before) Object.assign(box, before);
      this.onError(err);
    }
    this.render();
    this.onSelect(this.selected);
  }

  async remove(id, { record = true } = {}) {
    const box = this.boxes.find((b) => b.id === id);
    if (!box) return;
    try {
      await this.store.remove(id);
      this.boxes = this.boxes.filter((b) => b.id !== id);
      if (record) this.history.push({ kind: "delete", box: { ...box } });
      if (this.selectedId === id) this.selectedId = null;
      this.onChange(this.boxes);
      this.select(this.selectedId);
    } catch (err) {
      this.onError(err);
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
    if (box && label && box.label !== label) return this.update(box.id, { label }, { label: box.label });
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

  // Undo the last create / edit / delete, through the store like any other edit.
  undo() {
    // Chained, so a second Ctrl+Z waits for the first one's answer (and its new box id).
    this.undoing = (this.undoing || Promise.resolve()).then(() => this.#undo());
    return this.undoing;
  }

  async #undo() {
    const step = this.history.pop();
    if (!step) return;
    const id = (old) => {
      let now = old;
      for (let hops = 0; this.remap.has(now) && hops < 1000; hops += 1) now = this.remap.get(now);
      return now;
    };
    if (step.kind === "create") await this.remove(id(step.id), { record: false });
    else if (step.kind === "update") await this.update(id(step.id), step.before, null, { record: false });
    else {
      const { id: oldId, x, y, w, h, label } = step.box;
      const saved = await this.create({ x, y, w, h, label }, { record: false });
      if (saved && saved.id !== oldId) this.remap.set(oldId, saved.id);
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

  #boxNode(box, unit) {
    const colour = labelColour(box.label);
    const selected = box.id === this.selectedId;
    const group = svgEl("g", { class: selected ? "box selected" : "box", "data-id": box.id });
    group.append(svgEl("rect", {
      class: "box-rect", x: box.x, y: box.y, width: box.w, height: box.h,
      stroke: colour, "stroke-width": (selected ? 3 : 2) * unit,
    }));
    const text = svgEl("text", {
      class: "box-label", x: box.x + 8 * unit, y: box.y + 20 * unit,
      "font-size": 14 * unit, fill: "#fff", stroke: colour, "stroke-width": 4 * unit,
    });
    text.textContent = box.label || "(no label)";
    group.append(text);
    return group;
  }

  #handles(box, unit) {
    const group = svgEl("g", { class: "handles", "data-id": box.id });
    const size = 10 * unit;
    for (const handle of HANDLES) {
      const hx = handle.includes("w") ? box.x : handle.includes("e") ? box.x + box.w : box.x + box.w / 2;
      const hy = handle.includes("n") ? box.y : handle.includes("s") ? box.y + box.h : box.y + box.h / 2;
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
