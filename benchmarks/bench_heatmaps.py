"""Heat maps and localisation scores: cost relative to a bare forward / a sort, in one run."""

from __future__ import annotations

import numpy as np
import torch

from app.engine.cams import CamOptions, cam_map
from app.engine.localisation import score_boxes
from app.engine.models import get_model
from app.engine.regions import Box
from benchmarks._timing import best_time


def main() -> None:
    torch.manual_seed(0)
    model = get_model("efficientnet_lite0").module
    x = torch.randn(1, 3, 224, 224)

    def bare() -> None:
        with torch.inference_mode():
            model(x)

    forward = best_time(bare, 5)
    print(f"bare forward 1×3×224×224: {forward * 1000:.1f} ms")
    for method in ("mean", "gradcam", "gradcampp", "layercam", "cam"):
        took = best_time(lambda m=method: cam_map(model, x, "bn2", m))  # type: ignore[misc]
        print(f"{method:>10} at bn2: {took / forward:5.1f}× a bare forward")
    options = CamOptions(max_channels=64, batch_size=32)
    took = best_time(lambda: cam_map(model, x, "bn2", "scorecam", options=options), 1)
    print(f"  scorecam at bn2 (64 channels): {took / forward:5.1f}× a bare forward")

    heat = np.random.default_rng(0).random((1000, 1000))
    boxes = [Box(150 * i, 40 * i, 220, 310) for i in range(5)]
    sort = best_time(lambda: np.sort(heat.reshape(-1)))
    scores = best_time(lambda: score_boxes(heat, boxes))
    print(f"all localisation scores, 5 boxes on 1000×1000: {scores * 1000:.0f} ms = "
          f"{scores / sort:.1f}× one sort of the map")


if __name__ == "__main__":
    main()
