// Label colours, as the server assigns them (GET /api/labels: by rank among the store's
// labels, app/palette.py), so a label has one colour in the editor, the heat map and the
// scatter. A label the server has not listed yet (a box just given a new label) gets a
// neutral grey until the next labels refresh.
const UNKNOWN = "#7f7f7f";
let colours = new Map();
let rows = [];
const listeners = [];

// `labels`: GET /api/labels' rows ({label, colour, boxes, images}), in the server's order.
export function setLabelColours(labels) {
  rows = labels;
  colours = new Map(labels.map((l) => [l.label, l.colour]));
  for (const listener of listeners) listener(rows);
}

// The rows last given to setLabelColours.
export function knownLabels() {
  return rows;
}

// `listener(rows)` runs after every setLabelColours (the label bar, the editor's colours).
export function onLabelColours(listener) {
  listeners.push(listener);
}

// `fallback` is for a label the server has not listed (yet).
export function labelColour(label, fallback = UNKNOWN) {
  return colours.get(label) || fallback;
}
