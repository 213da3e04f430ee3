"""Heat maps and localisation scores: cost relative to a bare forward / a sort, in one run."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import torch

from app.boxes import Box
from app.engine.cams import CamOptions, cam_map
from app.engine.localisation import score_boxes
from app.engine.models import get_model
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

    print(_scorecam_peak_memory())

    heat = np.random.default_rng(0).random((1000, 1000))
    boxes = [Box(150 * i, 40 * i, 220, 310) for i in range(5)]
    sort = best_time(lambda: np.sort(heat.reshape(-1)))
    scores = best_time(lambda: score_boxes(heat, boxes))
    print(
        f"all localisation scores, 5 boxes on 1000×1000: {scores * 1000:.0f} ms = "
        f"{scores / sort:.1f}× one sort of the map"
    )


# Peak RSS only grows, so it is measured in a fresh process. A native-mode input at the
# default native_max_side (1024×768): before the pixel budget, 32 masked inputs of that size
# per batch peaked at +9 GB.
_PEAK = """
import resource, torch
from app.engine.cams import CamOptions, cam_map
from app.engine.models import get_model
model = get_model("efficientnet_lite0").module
x = torch.randn(1, 3, 768, 1024)
cam_map(model, x, "bn2", "mean")
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
cam_map(model, x, "bn2", "scorecam", options=CamOptions(max_channels=8))
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print((after - before) // 1024)
"""


def _scorecam_peak_memory() -> str:
    out = subprocess.run([sys.executable, "-c", _PEAK], capture_output=True, text=True, check=True)
    return (
        f"  scorecam at bn2, 1×3×768×1024 input, default batch budget: peak RSS "
        f"+{out.stdout.strip()} MiB"
    )


if __name__ == "__main__":
    main()
