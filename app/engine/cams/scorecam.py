"""Score-CAM (Wang et al. 2020, as the authors' code does it).

Each channel of ``A``, upsampled to the model's input (never to the photo) and min–max
scaled to ``[0, 1]``, masks the input; its weight is the target's softmax probability on the
masked input; the map is ``ReLU(Σ_c w_c A_c)``. Constant channels get no weight.

Its cost is bounded by :class:`~app.engine.cams.base.CamOptions`: only the ``max_channels``
channels with the highest mean activation are used (one forward pass each: the time), and
the masked inputs are forwarded in batches of at most ``batch_size`` inputs and
``max_batch_pixels`` input pixels (the memory, at any input size). The caller's
``cancelled`` is asked before every batch.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field

from app.engine.cams.base import METHODS, HeatMethod, LayerRun, MethodOptions, weighted
from app.engine.graph import TRACE_LOCK

__all__ = ["ScoreCamOptions", "scorecam_batch"]


class ScoreCamOptions(MethodOptions):
    """What a Score-CAM request may set: its time (channels, one forward pass each) and the
    size of its batches (its memory stays under ``CamOptions.max_batch_pixels`` anyway)."""

    max_channels: int = Field(
        64,
        ge=1,
        le=512,
        description=("Channels of highest mean activation to use (one forward pass each), 1..512."),
    )
    batch_size: int = Field(32, ge=1, le=64, description=("Masked inputs per forward pass, 1..64."))


def scorecam_batch(height: int, width: int, batch_size: int, max_batch_pixels: int) -> int:
    """Masked inputs per forward pass at an input of ``height × width`` (at least 1)."""
    return max(1, min(batch_size, max_batch_pixels // max(1, height * width)))


@METHODS.register("scorecam")
class _ScoreCam(HeatMethod):
    Options: ClassVar[type[MethodOptions]] = ScoreCamOptions

    def compute(self, run: LayerRun) -> torch.Tensor:
        a = run.activations
        assert run.target is not None
        keep = min(self.options.max_channels, a.shape[0])
        chosen = torch.topk(a.mean(dim=(1, 2)), keep).indices
        scores = torch.zeros(keep, dtype=a.dtype, device=a.device)
        size = run.x.shape[-2:]
        step = scorecam_batch(
            size[0], size[1], self.options.batch_size, self.options.max_batch_pixels
        )
        with torch.inference_mode():
            for start in range(0, keep, step):
                self.stop_if_cancelled()
                # masks one batch at a time: at native input sizes all of them would not fit
                masks = F.interpolate(
                    a[chosen[start : start + step]][:, None],
                    size=size,
                    mode="bilinear",
                    align_corners=False,
                )
                low = masks.amin(dim=(1, 2, 3), keepdim=True)
                high = masks.amax(dim=(1, 2, 3), keepdim=True)
                masks = (masks - low) / torch.where(high > low, high - low, 1.0)
                with TRACE_LOCK.forward():
                    logits = run.module(run.x * masks.to(run.x.dtype))
                probs = torch.softmax(logits, dim=1)
                # a constant channel masks nothing out: the paper gives it no weight
                weight = torch.where((high > low).flatten(), probs[:, run.target].to(a.dtype), 0)
                scores[start : start + step] = weight
        return F.relu(weighted(scores, a[chosen]))
