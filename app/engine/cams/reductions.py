"""Channel reductions: ``mean``, ``l2``, ``max`` and ``channel``, no target, no gradients."""

from __future__ import annotations

from typing import Literal, cast, get_args

import torch

from app.engine.cams.base import METHODS, HeatMethod, LayerRun

__all__ = ["Reduction", "reduce_channels"]

Reduction = Literal["mean", "l2", "max", "channel"]


def reduce_channels(fmap: torch.Tensor, how: Reduction, channel: int | None = None) -> torch.Tensor:
    """Reduce a ``C×h×w`` feature map over its channels to ``h×w``.

    Args:
        fmap: the feature map, ``C×h×w``.
        how: ``mean``, ``l2`` (Euclidean norm of each position's C-vector), ``max`` or
            ``channel`` (one channel as it is).
        channel: the channel for ``how="channel"``.

    Returns:
        The ``h×w`` map, same dtype as ``fmap``.

    Raises:
        ValueError: ``fmap`` is not 3-D, ``how`` is unknown, or ``channel`` is missing or
            out of range.
    """
    if fmap.ndim != 3:
        raise ValueError(f"expected a C×h×w feature map, got shape {tuple(fmap.shape)}")
    if how == "mean":
        return fmap.mean(dim=0)
    if how == "l2":
        norm: torch.Tensor = torch.linalg.vector_norm(fmap, dim=0)
        return norm
    if how == "max":
        return fmap.amax(dim=0)
    if how == "channel":
        count = fmap.shape[0]
        if channel is None or not 0 <= channel < count:
            raise ValueError(
                f"method 'channel' needs channel between 0 and {count - 1}; got {channel}"
            )
        return fmap[channel]
    raise ValueError(f"unknown reduction {how!r}; use mean, l2, max or channel")


class _ReductionMethod(HeatMethod):
    """A channel reduction as a heat-map method, registered under the reduction's name."""

    needs_target = False

    def compute(self, run: LayerRun) -> torch.Tensor:
        how = cast(Reduction, self.name)
        return reduce_channels(run.activations, how, self.options.channel)


for _how in get_args(Reduction):  # one method per reduction, in the order users see
    METHODS.register(_how)(type(f"_{_how.title()}", (_ReductionMethod,), {}))
