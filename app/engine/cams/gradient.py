"""Gradient CAMs: Grad-CAM, Grad-CAM++ and Layer-CAM (``S`` the target logit, ``G = ∂S/∂A``).

* ``gradcam`` (Selvaraju et al. 2017): ``ReLU(Σ_c mean_ij(G_c) A_c)``. On a GAP+Linear head
  it equals ``ReLU(cam) / (h·w)``.
* ``gradcampp`` (Chattopadhay et al. 2018), the closed form with exponentiated scores as
  pytorch-grad-cam writes it: ``α = G² / (2G² + Σ_ij A · G³)`` (0 where ``G = 0``),
  ``w_c = Σ_ij α_c ReLU(G_c)``, map ``ReLU(Σ_c w_c A_c)``. The paper's ``exp(S)`` factor
  on ``∂Y/∂A`` is left out: it scales the whole map by one positive number.
* ``layercam`` (Jiang et al. 2021): ``ReLU(Σ_c ReLU(G_c) ⊙ A_c)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from app.engine.cams.base import METHODS, HeatMethod, LayerRun, weighted

__all__: list[str] = []


@METHODS.register("gradcam")
class _GradCam(HeatMethod):
    needs_gradients = True

    def compute(self, run: LayerRun) -> torch.Tensor:
        assert run.gradients is not None
        return F.relu(weighted(run.gradients.mean(dim=(1, 2)), run.activations))


@METHODS.register("gradcampp")
class _GradCamPlusPlus(HeatMethod):
    needs_gradients = True

    def compute(self, run: LayerRun) -> torch.Tensor:
        g, a = run.gradients, run.activations
        assert g is not None
        g2 = g.pow(2)
        denominator = 2 * g2 + a.sum(dim=(1, 2))[:, None, None] * g.pow(3)
        # where G = 0 the numerator is 0 too; 0/0 is defined as 0 there, as in the paper
        alpha = torch.where(g != 0, g2 / torch.where(denominator != 0, denominator, 1.0), 0.0)
        weights = (alpha * F.relu(g)).sum(dim=(1, 2))
        return F.relu(weighted(weights, a))


@METHODS.register("layercam")
class _LayerCam(HeatMethod):
    needs_gradients = True

    def compute(self, run: LayerRun) -> torch.Tensor:
        assert run.gradients is not None
        return F.relu((F.relu(run.gradients) * run.activations).sum(dim=0))
