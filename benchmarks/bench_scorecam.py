"""Score-CAM on all 1,280 channels at ``bn2`` against pytorch-grad-cam, in one run.

Same model (the embedded EfficientNet-Lite0), layer, input (scikit-image's ``chelsea`` at
224×224), target class and ``torch.set_num_threads(2)``; pytorch-grad-cam's ``ScoreCAM``
with ``batch_size = 32`` (its row is skipped when the package is absent: it is a test
dependency). Goal: FeatureGap ≤ 0.5× pytorch-grad-cam's time. Wall and CPU seconds (all
threads) are both printed: on a shared machine the wall ratio swings with the neighbours'
load, the CPU ratio much less.

Then the default channel subset: the Spearman rank correlation of the map from the
``max_channels`` channels of highest mean activation with the all-channel map (both at the
layer's 7×7), on ``chelsea``, ``coffee`` and ``astronaut``.
"""

from __future__ import annotations

import contextlib
import io
import time
from collections.abc import Callable

import numpy as np
import torch
from scipy.stats import spearmanr

from app.engine.cams import CamOptions, cam_map
from app.engine.cams.base import STATE_LOCK, frozen_model
from app.engine.features import prepare_input
from app.engine.graph import traced
from app.engine.models import LoadedModel, get_model
from app.images import decode_image

_LAYER = "bn2"
_PHOTOS = ("chelsea", "coffee", "astronaut")
_SUBSETS = (64, 256)


def _photo(model: LoadedModel, name: str) -> torch.Tensor:
    from PIL import Image
    from skimage import data

    buffer = io.BytesIO()
    Image.fromarray(getattr(data, name)()).save(buffer, format="PNG")
    return prepare_input(model, decode_image(buffer.getvalue(), max_pixels=10**8))[None]


def _timed(run: Callable[[], object]) -> tuple[float, float]:
    start, start_cpu = time.perf_counter(), time.process_time()
    run()
    return time.perf_counter() - start, time.process_time() - start_cpu


def _live_channels(model: LoadedModel, x: torch.Tensor) -> int:
    """Channels whose mask is not constant: the ones FeatureGap forwards."""
    with torch.inference_mode():
        a = traced(model.module).run(x, (_LAYER,))[_LAYER][0]
    flat = a.flatten(1)
    return int((flat.amax(dim=1) > flat.amin(dim=1)).sum())


def _peer(model: LoadedModel, x: torch.Tensor, target: int) -> Callable[[], object] | None:
    """pytorch-grad-cam's ScoreCAM on the same layer, or ``None`` when it is not installed."""
    try:
        from pytorch_grad_cam import ScoreCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    except ImportError:
        return None
    module = model.module

    def run() -> object:
        # its own hooks on the module; the model's state restored as FeatureGap restores it
        with STATE_LOCK, frozen_model(module), contextlib.redirect_stderr(io.StringIO()):
            with ScoreCAM(model=module, target_layers=[module.get_submodule(_LAYER)]) as cam:
                cam.batch_size = 32
                return cam(input_tensor=x, targets=[ClassifierOutputTarget(target)])

    return run


def main() -> None:
    torch.set_num_threads(2)
    model = get_model("efficientnet_lite0")
    channels = int(traced(model.module).run(torch.zeros(1, 3, 32, 32), (_LAYER,))[_LAYER].shape[1])
    x = _photo(model, "chelsea")
    every = CamOptions(max_channels=channels)
    _, target = cam_map(model.module, x, _LAYER, "gradcam")  # warm up; the top class
    assert target is not None
    ours = _timed(lambda: cam_map(model.module, x, _LAYER, "scorecam", target, options=every))
    live = _live_channels(model, x)
    print(
        f"Score-CAM, all {channels} channels at {_LAYER}, chelsea 224², 2 threads: FeatureGap "
        f"{ours[0]:.1f}s wall / {ours[1]:.1f}s CPU ({live} channels forwarded, "
        f"{channels - live} constant ones skipped: {ours[0] / live * 1000:.1f} ms a masked input)"
    )
    peer = _peer(model, x, target)
    if peer is None:
        print("  pytorch-grad-cam is not installed: no comparison (pip install grad-cam)")
    else:
        theirs = _timed(peer)
        print(
            f"  pytorch-grad-cam ScoreCAM (batch 32): {theirs[0]:.1f}s wall / {theirs[1]:.1f}s "
            f"CPU ({theirs[0] / channels * 1000:.1f} ms a masked input); FeatureGap / "
            f"pytorch-grad-cam = {ours[0] / theirs[0]:.2f}x wall, {ours[1] / theirs[1]:.2f}x "
            "CPU (goal <= 0.5x)"
        )
    for name in _PHOTOS:
        photo = _photo(model, name)
        full, top = cam_map(model.module, photo, _LAYER, "scorecam", options=every)
        agreement = []
        for keep in _SUBSETS:
            part, _ = cam_map(
                model.module, photo, _LAYER, "scorecam", top, options=CamOptions(max_channels=keep)
            )
            rho = spearmanr(part.flatten().numpy(), full.flatten().numpy()).statistic
            agreement.append(f"{keep} channels rho = {float(np.nan_to_num(rho)):.3f}")
        print(f"  subset vs all channels, {name} (class {top}): {', '.join(agreement)}")


if __name__ == "__main__":
    main()
