// Label colours, as the server assigns them (GET /api/labels: by rank among the store's
// labels, app/palette.py), so a label has one colour in the editor, the heat map and the
// scatter. A label the server has not listed yet (a box just given a new label) gets a
// neutral grey until the next labels refresh and the editor's next redraw.
const UNKNOWN = "#7f7f7f";
let colours = new Map();

export function setLabelColours(labels) {
  colours = new Map(labels.map((l) => [l.label, l.colour]));
}

// `fallback` is for a label the server has not listed (yet).
export function labelColour(label, fallback = UNKNOWN) {
  return colours.get(label) || fallback;
}
