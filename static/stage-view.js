// The box editor's view: the stage is a fixed window onto the image; the canvas (image and
// overlay) is drawn at `scale` screen pixels per image pixel and shifted by (tx, ty) inside
// it. A wheel zoom keeps the image point under the cursor where it was (the zoom's fixed
// point), Space+drag and middle-drag pan, "fit" shows the whole image. The image is laid out
// at its zoomed size (not CSS-scaled), so the overlay's viewBox maps image pixels exactly.
const WHEEL_RATE = 0.002;  // zoom factor exp(-deltaY × rate): 100 px of wheel ≈ ×1.22
const MAX_SCALE = 32;  // screen pixels per image pixel
const MAX_SIDE_PX = 65536;  // the zoomed image's longest side on screen, at most
const KEEP_PX = 48;  // a pan stops while this much of the image is still in view
const MIN_STAGE_PX = 200;
const PIXELATED_FROM = 4;  // from this zoom on, each image pixel shows as a crisp square

const clamp = (v, lo, hi) => Math.min(Math.max(v, lo), hi);

export class StageView {
  // onChange({scale, fit}): after every change of zoom or position.
  constructor(stage, canvas, img, onChange) {
    this.stage = stage;
    this.canvas = canvas;
    this.img = img;
    this.onChange = onChange;
    this.size = null;  // the image's {width, height}
    this.scale = 1;
    this.fitScale = 1;
    this.tx = 0;
    this.ty = 0;
    this.fit = true;
    this.space = false;
    this.inside = false;
    this.pan = null;
    stage.addEventListener("wheel", (e) => this.#wheel(e), { passive: false });
    stage.addEventListener("pointerenter", () => { this.inside = true; });
    stage.addEventListener("pointerleave", () => { this.inside = false; });
    // A middle press would start the browser's autoscroll (or paste, on X11): it pans here.
    stage.addEventListener("mousedown", (e) => { if (e.button === 1) e.preventDefault(); });
    window.addEventListener("keydown", (e) => this.#key(e, true));
    window.addEventListener("keyup", (e) => this.#key(e, false));
    window.addEventListener("blur", () => this.#setSpace(false));
    // The stage's width, or the window's height (fit uses 70% of it), may change.
    new ResizeObserver(() => this.layout()).observe(stage);
    window.addEventListener("resize", () => this.layout());
  }

  // A new image: shown whole (fit).
  show(width, height) {
    this.size = { width, height };
    this.fit = true;
    this.pan = null;
    this.layout();
  }

  // Image pixels per screen pixel.
  get unit() {
    return this.scale > 0 ? 1 / this.scale : 1;
  }

  get minScale() {
    return this.fitScale / 4;
  }

  get maxScale() {
    const side = Math.max(this.size.width, this.size.height);
    return Math.max(this.fitScale * 2, Math.min(MAX_SCALE, MAX_SIDE_PX / side));
  }

  // "fit": the whole image, as large as the stage's width and 70% of the window's height
  // allow; a number: that many screen pixels per image pixel, zoomed about the stage's
  // centre (the image point there stays there, no jump to a corner).
  setZoom(zoom) {
    if (zoom === "fit") {
      this.fit = true;
      this.layout();
      return;
    }
    const rect = this.stage.getBoundingClientRect();
    this.zoomAt(rect.left + this.stage.clientWidth / 2, rect.top + this.stage.clientHeight / 2, Number(zoom));
  }

  // Zoom to `scale` keeping the image point under (clientX, clientY) at that screen point.
  zoomAt(clientX, clientY, scale) {
    if (!this.size || !Number.isFinite(scale)) return;
    const next = clamp(scale, this.minScale, this.maxScale);
    const { x, y } = this.#local(clientX, clientY);
    const px = (x - this.tx) / this.scale, py = (y - this.ty) / this.scale;
    this.fit = false;
    this.scale = next;
    this.tx = x - px * next;
    this.ty = y - py * next;
    this.#apply();
  }

  panBy(dx, dy) {
    if (!this.size) return;
    this.fit = false;
    this.tx += dx;
    this.ty += dy;
    this.#apply();
  }

  // A press that pans rather than edits: the middle button, or the left one with Space held.
  wantsPan(event) {
    return event.button === 1 || (event.button === 0 && this.space);
  }

  startPan(event) {
    this.pan = { x: event.clientX, y: event.clientY, tx: this.tx, ty: this.ty };
    this.stage.classList.add("panning");
  }

  movePan(event) {
    if (!this.pan) return;
    this.fit = false;
    this.tx = this.pan.tx + event.clientX - this.pan.x;
    this.ty = this.pan.ty + event.clientY - this.pan.y;
    this.#apply();
  }

  endPan() {
    this.pan = null;
    this.stage.classList.remove("panning");
  }

  // The stage is as tall as the image at fit; "fit" is recomputed from its width, any other
  // zoom keeps its scale and only pulls the image back into view.
  layout() {
    if (!this.size || !this.stage.clientWidth) return;
    const { width, height } = this.size;
    const most = 0.7 * window.innerHeight;
    this.fitScale = Math.min(this.stage.clientWidth / width, most / height);
    this.stage.style.height = `${Math.max(height * this.fitScale, Math.min(MIN_STAGE_PX, most))}px`;
    if (this.fit) {
      this.scale = this.fitScale;
      this.tx = (this.stage.clientWidth - width * this.scale) / 2;
      this.ty = (this.stage.clientHeight - height * this.scale) / 2;
    }
    this.#apply();
  }

  #apply() {
    const w = this.size.width * this.scale, h = this.size.height * this.scale;
    if (!this.fit) {
      const keepX = Math.min(KEEP_PX, w), keepY = Math.min(KEEP_PX, h);
      this.tx = clamp(this.tx, keepX - w, this.stage.clientWidth - keepX);
      this.ty = clamp(this.ty, keepY - h, this.stage.clientHeight - keepY);
    }
    this.img.style.width = `${w}px`;
    this.img.style.height = `${h}px`;
    this.canvas.style.transform = `translate(${this.tx}px, ${this.ty}px)`;
    this.img.classList.toggle("pixelated", this.scale >= PIXELATED_FROM);
    this.onChange({ scale: this.scale, fit: this.fit });
  }

  // Client coordinates to the stage's own (its content box's top-left is 0, 0).
  #local(clientX, clientY) {
    const rect = this.stage.getBoundingClientRect();
    return { x: clientX - rect.left - this.stage.clientLeft, y: clientY - rect.top - this.stage.clientTop };
  }

  #wheel(event) {
    if (!this.size) return;
    event.preventDefault();
    const px = event.deltaMode === 1 ? 16 : event.deltaMode === 2 ? this.stage.clientHeight : 1;
    if (event.deltaY) {
      this.zoomAt(event.clientX, event.clientY, this.scale * Math.exp(-event.deltaY * px * WHEEL_RATE));
    }
    if (event.deltaX) this.panBy(-event.deltaX * px, 0);
  }

  // Space held over the stage: a left drag pans (and the page does not scroll).
  #key(event, down) {
    if (event.code !== "Space" && event.key !== " ") return;
    const typing = event.target instanceof Element && event.target.closest("input, select, textarea");
    const shown = this.stage.offsetParent !== null;  // a closed viewer leaves Space alone
    if (!this.size || typing || !shown || !(this.inside || this.space)) return;
    event.preventDefault();
    this.#setSpace(down);
  }

  #setSpace(on) {
    this.space = on;
    this.stage.classList.toggle("pan-ready", on);
  }
}
