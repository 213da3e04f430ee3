"""CAM (Zhou et al. 2016): ``Σ_c W[target, c] A_c``, ``W`` the head Linear after pooling.

No ReLU: the map keeps its sign, and ``mean_ij(cam) + b[target]`` equals the target logit.
Only valid on the one layer that :func:`app.engine.cams.head.cam_layers` finds.
"""

from __future__ import annotations

import torch

from app.engine.cams.base import METHODS, HeatMethod, LayerRun, weighted
from app.engine.cams.head import cam_linear
from app.engine.graph import TRACE_LOCK

__all__: list[str] = []


@METHODS.register("cam")
class _Cam(HeatMethod):
    def compute(self, run: LayerRun) -> torch.Tensor:
        linear = cam_linear(run.module, run.layer)
        assert run.logits is not None and run.target is not None
        with TRACE_LOCK.shared():  # the model's parameters, read by attribute
            weight = linear.weight.to(run.activations.dtype)
            bias = None if linear.bias is None else linear.bias.to(weight.dtype)
        pooled = run.activations.mean(dim=(1, 2))
        expected = weight @ pooled
        if bias is not None:
            expected = expected + bias
        scale = float(run.logits.abs().max()) + 1.0
        if not torch.allclose(expected, run.logits, atol=1e-4 * scale, rtol=1e-4):
            raise ValueError(
                f"CAM needs the logits to be a Linear of the average of {run.layer!r}, and "
                "they are not on this model; use gradcam"
            )
        return weighted(weight[run.target], run.activations)
