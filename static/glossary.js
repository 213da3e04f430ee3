// Plain words for every score, measure, method and column the page shows: what it is and
// which direction is better. Shown as tooltips (the `title` of headers, options and
// captions). A measure's direction comes from the API (GET /api/measures); these texts say
// what the numbers mean.
const MEASURES = {
  euclidean: "Euclidean distance between the groups' mean descriptors.",
  std_euclidean: "Euclidean distance after dividing each feature by its spread over all boxes (scipy seuclidean), so no single loud channel dominates.",
  cosine: "Cosine distance 1 − cos(angle) between the mean descriptors, 0 … 2; ignores their length.",
  mahalanobis: "Distance between the means measured in units of the groups' (shrunk) covariance: far when the groups' own spread is small.",
  mutual_information: "Mutual information between the two groups' values on a common grid (nats): how much one tells about the other.",
  grassmann: "Angle between the subspaces spanned by each group's feature vectors (principal angles): compares the directions the features vary in.",
  mmd: "Maximum Mean Discrepancy (squared, Gaussian kernel) between the two sets of feature vectors: 0 when the distributions match. The unbiased estimate may dip below 0.",
  seed_mmd: "The research note's multi-kernel MMD, as its code computes it (equal group sizes).",
};

const SCORES = {
  pointing_game: "Pointing game: 1 when the heat map's highest pixel lies inside the box, else 0. Higher is better.",
  energy: "Energy: the share of the (non-negative) heat map's mass that falls inside the box, 0 … 1. Higher is better.",
  relevance_rank: "Relevance-rank accuracy: of the |box| highest pixels, the share inside the box, 0 … 1. Higher is better.",
  top_k_intersection: "Top-k intersection: the share of the k highest pixels that land inside the box, 0 … 1. Higher is better.",
  auc: "ROC-AUC of the heat map as a classifier of 'inside the box' pixels, 0.5 = chance, 1 = perfect. Higher is better.",
  iou: "IoU of the thresholded heat map with the box, 0 … 1. Higher is better.",
};

const METHODS = {
  mean: "Mean over the layer's channels at each position (no class).",
  l2: "L2 norm over the layer's channels at each position (no class).",
  max: "Largest channel value at each position (no class).",
  channel: "One channel of the layer, chosen by its number (no class).",
  cam: "CAM: the classifier's weights for the target class times the last feature maps.",
  gradcam: "Grad-CAM: channels weighted by the target class's mean gradient.",
  gradcampp: "Grad-CAM++: Grad-CAM with higher-order gradient weights (several objects).",
  layercam: "Layer-CAM: positive gradients times activations, position by position (good at shallow layers).",
  scorecam: "Score-CAM: each channel's mask scored by the class's output (slow; no gradients).",
};

const COLUMNS = {
  box: "The box's id.",
  label: "The box's label.",
  x: "Left edge, image pixels.", y: "Top edge, image pixels.", w: "Width, image pixels.", h: "Height, image pixels.",
  intra: "Mean distance between boxes of the same label. Lower is better (tight groups).",
  inter: "Mean distance between boxes of different labels. Higher is better (groups far apart).",
  "inter / intra": "inter ÷ intra: above 1, labels lie farther from each other than their own boxes do. Higher separates better.",
  silhouette: "Silhouette, −1 … 1: how much closer each box is to its own label than to the nearest other label. Higher separates better; near 0 means no structure.",
  "p-value": "Permutation test of 'no difference between these two labels', exchanging whole images (or boxes). Small: a real difference.",
  adjusted: "The p-value adjusted for testing every pair of the matrix (Holm or Benjamini–Hochberg).",
  permutations: "How many random relabellings the test drew ('exact': every possible one).",
  "95% interval": "Bootstrap interval of the measure, resampling whole units; the heading names the method used. studentized (the default): bootstrap-t, each resample's spread from 25 inner resamples, which held 95% on small groups where BCa covered 77–91%. BCa: bias-corrected and accelerated. percentile: the plain quantiles, too high for distances. A warning says when the interval reaches 0 (no gap), where no method holds 95%.",
  pair: "The two labels compared.",
  layer: "The layer (graph node) the descriptors come from.",
};

const DESCRIPTORS = {
  gap: "gap: the layer's channels averaged over the box (one vector per box).",
  grid: "grid: the box resampled to an s×s grid and flattened (keeps the layout).",
  pixels: "pixels: the s×s grid's vectors as a set of samples (for set measures: MMD, Grassmann).",
};

// The direction of a measure in plain words, from the API's higher_is_better flag.
export function direction(higherIsBetter) {
  return higherIsBetter ? "higher = more alike (a similarity)" : "higher = farther apart (a distance; 0 = same)";
}

// `measure`: the API's entry ({name, higher_is_better, needs}), or a bare name.
export function explainMeasure(measure) {
  const m = typeof measure === "string" ? { name: measure } : measure;
  const what = MEASURES[m.name] || `${m.name}.`;
  const way = m.higher_is_better === undefined ? "" : ` Direction: ${direction(m.higher_is_better)}.`;
  const needs = m.needs ? ` Consumes ${m.needs} descriptors.` : "";
  return `${what}${way}${needs}`;
}

export function explainMethod(name) {
  return METHODS[name] || name;
}

export function explainDescriptor(name) {
  return DESCRIPTORS[name] || name;
}

// A table column or score: `measures` maps a measure's name to its API entry.
export function explainColumn(name, measures = {}) {
  if (SCORES[name]) return SCORES[name];
  if (COLUMNS[name]) return COLUMNS[name];
  if (measures[name] || MEASURES[name]) return explainMeasure(measures[name] || name);
  return "";
}

// Score names as words ("pointing_game" → "pointing game").
export const words = (name) => name.replace(/_/g, " ");
