// Wires the page together: settings, gallery, image view, controls and views.
import { get, getToken, setToken } from "./api.js";
import { choices, gridChoices, heatChoices, initControls, loadControls, setTarget } from "./controls.js";
import { fillGalleryLabels, initGallery, refreshCard, refreshGallery } from "./gallery.js";
import { currentBoxes, currentImage, initImageView, openImage } from "./image-view.js";
import { initJobs } from "./jobs.js";
import { setLabelColours } from "./palette.js";
import { $, busy, fillSelect, guarded } from "./ui.js";
import { showDistances } from "./views/distances.js";
import { clearHover, showEmbedding } from "./views/embedding.js";
import { clearGrid, initHeatmapView, showGrid, showHeatmap } from "./views/heatmap.js";
import { showPredictions } from "./views/predictions.js";
import { showSeparation } from "./views/separation.js";
import { initTraining } from "./views/training.js";

// The labels picked in the controls, else every label with boxes.
async function labelsWithBoxes() {
  const picked = [...$("compare-labels").selectedOptions].map((o) => o.value);
  const labels = picked.length ? picked : (await get("/api/labels")).map((l) => l.label);
  if (labels.length < 2) throw new Error("compare at least two labels: label boxes on two classes or pick two");
  return labels;
}

async function refreshLabels() {
  const labels = await get("/api/labels");
  setLabelColours(labels);
  const count = (n, one, many = `${one}s`) => `${n} ${n === 1 ? one : many}`;
  fillSelect($("compare-labels"), labels, {
    value: (l) => l.label, text: (l) => `${l.label} (${count(l.boxes, "box", "boxes")} on ${count(l.images, "image")})`,
  });
  fillGalleryLabels(labels);
}

function init() {
  $("api-token").value = getToken();
  window.addEventListener("featuregap:unauthorized", () => {
    $("settings").open = true;
    $("settings-error").textContent = "The server needs an API token: enter it here and save.";
  });
  $("save-token").addEventListener("click", async () => {
    setToken($("api-token").value.trim());
    $("settings-error").textContent = "";
    await guarded($("settings-error"), async () => {
      await Promise.all([refresh(), loadControls()]);
    });
  });
  const refresh = () => Promise.all([refreshGallery(), guarded($("controls-error"), refreshLabels)]);
  // Another image: the side-by-side grid of the last one goes.
  const open = async (id, options) => {
    clearGrid($("grid-view"));
    await openImage(id, options);
  };
  initGallery({ onOpen: open, onChanged: () => guarded($("controls-error"), refreshLabels) });
  initImageView({ onChange: () => Promise.all([
    currentImage() && refreshCard(currentImage().id), guarded($("controls-error"), refreshLabels)]) });
  initJobs($("job"));
  initHeatmapView($("heatmap-view"), $("heatmap-opacity"), $("grid-view"));
  $("embed-method").addEventListener("change", () => clearHover($("embedding-view")));

  // Each action's button (and its neighbours that start the same kind of call) is disabled
  // while its call runs; errors show beside the buttons; rows of progress and Cancel go to
  // the tray under them.
  const imageButtons = ["run-heatmap", "run-predictions", "run-grid"].map($);
  const imageAction = (id, action) => $(id).addEventListener("click", () => busy(imageButtons, $("image-analysis-error"), async () => {
    const image = currentImage();
    if (image) await action(image);
  }));
  imageAction("run-heatmap", (image) => showHeatmap($("heatmap-view"), image, heatChoices(), $("image-jobs")));
  imageAction("run-grid", (image) => showGrid($("grid-view"), image, gridChoices(), $("image-jobs")));
  imageAction("run-predictions", (image) => showPredictions($("predictions-view"), image, choices(), currentBoxes(), {
    tray: $("image-jobs"),
    onPick: (index, label) => {
      setTarget(index, label);
      $("target").focus();
    },
  }));
  const groupAction = (id, action, view) => $(id).addEventListener("click", () => busy($(id), $("analysis-error"), async () => {
    await action($(view), await labelsWithBoxes(), { ...choices(), tray: $("job") }, { onOpen: open });
  }));
  groupAction("run-distances", showDistances, "distances-view");
  groupAction("run-separation", showSeparation, "separation-view");
  groupAction("run-embedding", showEmbedding, "embedding-view");
  initTraining($("training-panel"));
  refresh();
  initControls().then(() => { document.body.dataset.ready = "1"; });
}

init();
