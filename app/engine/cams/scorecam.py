"""Score-CAM (Wang et al. 2020, as the authors' code does it).

Each channel of ``A``, upsampled to the model's input (never to the photo) and min–max
scaled to ``[0, 1]``, masks the input; its weight is the target's softmax probability on the
masked input; the map is ``ReLU(Σ_c w_c A_c)``. Constant channels get no weight.

Its cost is bounded by :class:`~app.engine.cams.base.CamOptions`: only the ``max_channels``
channels with the highest mean activation are used (one forward pass each: the time), and
the masked inputs are forwarded in batches of at most ``batch_size`` inputs and
``max_batch_pixels`` input pixels (the memory, at any input size). The caller's
``cancelled`` is asked before every batch, and its ``progress`` told ``batch k of K``.

Where the time goes, and what is not spent:

* a constant channel (a ReLU's all-zero channel: 736 of ``bn2``'s 1,280 on ``chelsea``)
  masks nothing out and gets no weight, so it is never forwarded, and the others
  fill whole batches. Constant is decided on the layer's own map: upsampling a constant
  map can leave a spread of one rounding error (2.0 becomes 2.0 ± 2e-16), which min–max
  scaling would blow up into a mask of noise with a weight of its own;
* the masked inputs go through the model's logits with its batch norms folded into the
  convolutions (:mod:`app.engine.fold`; these passes only read logits) under
  ``torch.inference_mode``, in ``channels_last`` layout, in which the convolutions run
  faster on a CPU (64 channels of the default model: 2.5 s instead of 3.5 s on one core,
  the same map to 5e-7 of its maximum); the model's parameters are left as they are.

The default ``max_channels`` (64) keeps a heat map interactive. On the default model at
``bn2`` (1,280 channels, 544 of them not constant on ``chelsea``) the map of the 64
channels of highest mean activation agrees with the all-channel map to a Spearman rank
correlation of 0.995 on scikit-image's ``chelsea``, 0.998 on ``coffee`` and 0.958 on
``astronaut`` (128 channels: 0.999, 0.999, 0.985; 256: 1.000, 1.000, 0.995; 512: 1.000,
1.000, 0.998); ``make bench`` prints it for 64 and 256.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field

from app.engine.cams.base import METHODS, HeatMethod, LayerRun, MethodOptions, weighted
from app.engine.graph import traced

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
    batch_size: int = Field(8, ge=1, le=64, description=("Masked inputs per forward pass, 1..64."))


def scorecam_batch(height: int, width: int, batch_size: int, max_batch_pixels: int) -> int:
    """Masked inputs per forward pass at an input of ``height × width`` (at least 1)."""
    return max(1, min(batch_size, max_batch_pixels // max(1, height * width)))


@METHODS.register("scorecam")
class _ScoreCam(HeatMethod):
    Options: ClassVar[type[MethodOptions]] = ScoreCamOptions
    forward_share: ClassVar[float] = 0.02  # one forward pass of the K·batch that follow

    def compute(self, run: LayerRun) -> torch.Tensor:
        a = run.activations
        assert run.target is not None
        keep = min(self.options.max_channels, a.shape[0])
        chosen = a[torch.topk(a.mean(dim=(1, 2)), keep).indices]
        scores = torch.zeros(keep, dtype=a.dtype, device=a.device)
        size = (int(run.x.shape[-2]), int(run.x.shape[-1]))
        step = scorecam_batch(*size, self.options.batch_size, self.options.max_batch_pixels)
        flat = chosen.flatten(1)
        # a constant channel masks nothing out: the paper gives it no weight, so no forward
        live = torch.nonzero(flat.amax(dim=1) > flat.amin(dim=1)).flatten()
        x = run.x.contiguous(memory_format=torch.channels_last)
        graph = traced(run.module)
        logits_of = graph.extractor((graph.output,), folded=True)
        batches = -(-len(live) // step)
        share = self.forward_share
        with torch.inference_mode():
            for k, start in enumerate(range(0, len(live), step)):
                self.stop_if_cancelled()
                done = share + (1 - share) * k / batches
                self.step(done, f"Score-CAM batch {k + 1} of {batches}")
                rows = live[start : start + step]
                masks = F.interpolate(
                    chosen[rows][:, None], size=size, mode="bilinear", align_corners=False
                )
                low = masks.amin(dim=(1, 2, 3), keepdim=True)
                high = masks.amax(dim=(1, 2, 3), keepdim=True)
                masks = (masks - low) / torch.where(high > low, high - low, 1.0)
                logits = logits_of(x * masks.to(x.dtype))[graph.output]
                probs = torch.softmax(logits, dim=1)[:, run.target].to(a.dtype)
                scores[rows] = torch.where((high > low).flatten(), probs, 0)
        return F.relu(weighted(scores, chosen))
