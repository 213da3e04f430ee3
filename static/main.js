// Wires the page together: settings, gallery, image view, controls and views.
import { get, getToken, setToken } from "./api.js";
import { choices, initControls, loadControls } from "./controls.js";
import { initGallery, refreshGallery } from "./gallery.js";
import { currentBoxes, currentImage, initImageView, openImage } from "./image-view.js";
import { $, guarded } from "./ui.js";
import { showDistances } from "./views/distances.js";
import { showEmbedding } from "./views/embedding.js";
import { initHeatmapView, showHeatmap } from "./views/heatmap.js";
import { showPredictions } from "./views/predictions.js";
import { showSeparation } from "./views/separation.js";

async function labelsWithBoxes() {
  const labels = (await get("/api/labels")).map((l) => l.label);
  if (labels.length < 2) throw new Error("label boxes with at least two different labels first");
  return labels;
}

function init() {
  $("api-token").value = getToken();
  $("save-token").addEventListener("click", async () => {
    setToken($("api-token").value.trim());
    await guarded($("settings-error"), async () => {
      await Promise.all([refreshGallery(), loadControls()]);
    });
  });
  initGallery({ onOpen: openImage });
  initImageView({ onChange: refreshGallery });
  initHeatmapView();
  const open = async (id) => { await openImage(id); };
  const imageAction = (id, action) => $(id).addEventListener("click", () => guarded($("image-analysis-error"), async () => {
    const image = currentImage();
    if (image) await action(image, choices(), currentBoxes());
  }));
  imageAction("run-heatmap", showHeatmap);
  imageAction("run-predictions", showPredictions);
  const groupAction = (id, action) => $(id).addEventListener("click", () => guarded($("analysis-error"), async () => {
    await action(await labelsWithBoxes(), choices(), { onOpen: open });
  }));
  groupAction("run-distances", showDistances);
  groupAction("run-separation", showSeparation);
  groupAction("run-embedding", showEmbedding);
  refreshGallery();
  initControls().then(() => { document.body.dataset.ready = "1"; });
}

init();
