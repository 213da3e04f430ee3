// Undo and redo of box edits for one image, kept in the tab's sessionStorage so the steps
// survive closing and reopening the image (or reloading the page) within the session.
// A step records the box's state before and after, never a command to replay blindly:
//   {kind: "create", id, box}            a box was drawn (box: x, y, w, h, label)
//   {kind: "update", id, before, after}  moved, resized, nudged or relabelled
//   {kind: "delete", id, box}            a box was deleted
// Undoing a delete (or redoing a create) makes a new box with a new id; renumber() then
// rewrites the old id in every step, so later steps still name the box.
const PREFIX = "featuregap.history.";
const LIMIT = 200;

function storage() {
  try {
    return window.sessionStorage;
  } catch {
    return null;  // storage refused (privacy settings): the history lives as long as the page
  }
}

const memory = new Map();

export class EditHistory {
  // `image`: {id, sha256}; the hash keeps a reused id from inheriting another image's steps.
  constructor(image) {
    this.key = `${PREFIX}${image.id}.${image.sha256 || ""}`;
    const saved = this.#load();
    this.undoSteps = saved.undo;
    this.redoSteps = saved.redo;
  }

  get canUndo() {
    return this.undoSteps.length > 0;
  }

  get canRedo() {
    return this.redoSteps.length > 0;
  }

  // A new edit: it joins the undo steps and ends what could be redone.
  record(step) {
    this.undoSteps.push(step);
    if (this.undoSteps.length > LIMIT) this.undoSteps.shift();
    this.redoSteps = [];
    this.#save();
  }

  // The next step to undo (or redo), taken off its list; put it on the other list with
  // done() once the store has applied it, or drop it (never call done) when it failed.
  takeUndo() {
    const step = this.undoSteps.pop();
    this.#save();
    return step;
  }

  takeRedo() {
    const step = this.redoSteps.pop();
    this.#save();
    return step;
  }

  undone(step) {
    this.redoSteps.push(step);
    this.#save();
  }

  redone(step) {
    this.undoSteps.push(step);
    this.#save();
  }

  renumber(oldId, newId) {
    for (const step of [...this.undoSteps, ...this.redoSteps]) if (step.id === oldId) step.id = newId;
    this.#save();
  }

  #load() {
    const empty = { undo: [], redo: [] };
    const store = storage();
    if (memory.has(this.key) || !store) return memory.get(this.key) || empty;
    try {
      const saved = JSON.parse(store.getItem(this.key) || "null");
      return saved && Array.isArray(saved.undo) && Array.isArray(saved.redo) ? saved : empty;
    } catch {
      return empty;
    }
  }

  #save() {
    const saved = { undo: this.undoSteps, redo: this.redoSteps };
    const store = storage();
    if (!store) {
      memory.set(this.key, saved);
      return;
    }
    try {
      store.setItem(this.key, JSON.stringify(saved));
    } catch {
      memory.set(this.key, saved);  // quota: keep this page's copy at least
    }
  }
}
