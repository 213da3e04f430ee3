// Small page helpers: errors shown next to what caused them, recent labels, tables.
const RECENT_KEY = "featuregap.recentLabels";

export const $ = (id) => document.getElementById(id);

// A view's own element named by `data-part`: views find their parts inside the root they
// are given, never by page-wide ids.
export const part = (root, name) => root.querySelector(`[data-part="${name}"]`);

export function showError(element, err) {
  element.textContent = err ? (err.message || String(err)) : "";
}

// Run an action, showing its error in `element` (and clearing it on success).
export async function guarded(element, action) {
  showError(element, null);
  try {
    return await action();
  } catch (err) {
    if (err.name !== "AbortError") showError(element, err);
    return undefined;
  }
}

// Run `action` with `buttons` disabled (a second click cannot start the same call twice),
// showing its error in `element`; the buttons come back however it ends.
export async function busy(buttons, element, action) {
  const list = Array.isArray(buttons) ? buttons : [buttons];
  for (const b of list) { b.disabled = true; b.setAttribute("aria-busy", "true"); }
  try {
    return await guarded(element, action);
  } finally {
    for (const b of list) { b.disabled = false; b.removeAttribute("aria-busy"); }
  }
}

// What limits an answer (too few images for a test, a 1×1 layer, …), shown beside its figure.
export function showWarnings(list, warnings) {
  list.replaceChildren(...(warnings || []).map((w) => Object.assign(document.createElement("li"), { textContent: w })));
  list.hidden = !list.children.length;
}

export function recentLabels() {
  try {
    const list = JSON.parse(localStorage.getItem(RECENT_KEY) || "[]");
    return Array.isArray(list) ? list.filter((l) => typeof l === "string") : [];
  } catch {
    return [];
  }
}

export function rememberLabel(label) {
  if (!label) return;
  const list = [label, ...recentLabels().filter((l) => l !== label)].slice(0, 12);
  localStorage.setItem(RECENT_KEY, JSON.stringify(list));
}

export function fillLabelList(datalist, known = []) {
  const labels = [...new Set([...recentLabels(), ...known])];
  datalist.replaceChildren(...labels.map((label) => new Option(label, label)));
}

export function fillSelect(select, items, { value, text, selected } = {}) {
  const keep = selected !== undefined ? [selected] : [...select.selectedOptions].map((o) => o.value);
  select.replaceChildren(...items.map((item) => {
    const v = value ? value(item) : String(item);
    return new Option(text ? text(item) : String(item), v, false, keep.includes(v));
  }));
}

const fmt = (v) => (typeof v === "number" ? (Number.isInteger(v) ? String(v) : v.toPrecision(4)) : v ?? "");

// A table from column names and row arrays. `explain(column)` gives a header's tooltip
// (what the number is, which direction is better); names show with spaces, not snake_case.
export function fillTable(table, columns, rows, explain = () => "") {
  const head = document.createElement("tr");
  for (const c of columns) {
    const th = Object.assign(document.createElement("th"), { textContent: String(c).replace(/_/g, " "), scope: "col" });
    const tip = explain(c);
    if (tip) Object.assign(th, { title: tip, className: "tip" });
    head.append(th);
  }
  const body = rows.map((row) => {
    const tr = document.createElement("tr");
    for (const v of row) tr.append(Object.assign(document.createElement("td"), { textContent: fmt(v) }));
    return tr;
  });
  table.replaceChildren(head, ...body);
}
