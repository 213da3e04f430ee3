"""Training losses for "in-training interpretability".

Domain alignment: DDC's MMD and DAN's MK-MMD between two batches of features (ours).
Class separation: triplet with batch-hard mining, multi-class N-pair and contrastive, from
pytorch-metric-learning (``pml``), behind one signature ``loss(embeddings, labels)`` and
registered in :data:`METRIC_LOSSES` by name. Each is checked in the tests against the
paper's formula written as a float64 loop.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from app.engine.measures._kernels import mean_pair_sqdist, median_sqdist
from app.engine.measures.base import as_samples
from app.engine.registry import Registry

__all__ = [
    "METRIC_LOSSES",
    "ContrastiveLoss",
    "MKMMDLoss",
    "MMDLoss",
    "MetricLoss",
    "NPairLoss",
    "TripletLoss",
    "get_metric_loss",
]


def _sqdist(a: Tensor, b: Tensor) -> Tensor:
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
    return d.clamp_min(0)


def _check(source: Tensor, target: Tensor, min_rows: int) -> None:
    s = as_samples(source, "source", min_rows=min_rows)
    t = as_samples(target, "target", min_rows=min_rows)
    if s.shape[1] != t.shape[1] or source.ndim != 2 or target.ndim != 2:
        raise ValueError(
            f"source and target must be n×d and m×d with one d, got {tuple(source.shape)} "
            f"and {tuple(target.shape)}"
        )


def _estimate(kxx: Tensor, kyy: Tensor, kxy: Tensor, unbiased: bool) -> Tensor:
    n, m = kxx.shape[0], kyy.shape[0]
    if not unbiased:
        return kxx.mean() + kyy.mean() - 2 * kxy.mean()
    return (
        (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
        + (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
        - 2 * kxy.mean()
    )


class MMDLoss(nn.Module):
    """DDC's loss: Gaussian-kernel MMD² between a batch's source and target features.

    ``k(a, b) = exp(−‖a−b‖²/(2σ²))``; ``sigma=None`` takes the median heuristic over the
    pooled batch, detached from the graph (the bandwidth is not trained). Values equal
    :func:`app.engine.measures.mmd` with the same sigma and estimator; ``n ≠ m`` works.

    Args:
        sigma: fixed bandwidth, or ``None`` for the per-batch median heuristic.
        estimator: ``"biased"`` (≥ 0) or ``"unbiased"`` (may be negative).
    """

    def __init__(
        self, sigma: float | None = None, estimator: Literal["biased", "unbiased"] = "biased"
    ) -> None:
        super().__init__()
        if sigma is not None and not sigma > 0:
            raise ValueError(f"sigma must be positive, got {sigma}")
        if estimator not in ("biased", "unbiased"):
            raise ValueError(f"unknown estimator {estimator!r}; use 'biased' or 'unbiased'")
        self.sigma = sigma
        self.estimator = estimator

    def forward(self, source: Tensor, target: Tensor) -> Tensor:
        """MMD² between ``source`` (``n×d``) and ``target`` (``m×d``) as a 0-d tensor."""
        _check(source, target, 2 if self.estimator == "unbiased" else 1)
        pooled = torch.cat([source, target])
        d = _sqdist(pooled, pooled)
        if self.sigma is None:
            # The measure's own median (the mean of the two middle values, numpy's), so the
            # loss and mmd(sigma=None) use one bandwidth.
            z = pooled.detach()
            width = (median_sqdist(z) or mean_pair_sqdist(z) or 1.0) if z.shape[0] > 1 else 1.0
        else:
            width = 2 * self.sigma**2
        k = torch.exp(-d / width)
        n = source.shape[0]
        return _estimate(k[:n, :n], k[n:, n:], k[:n, n:], self.estimator == "unbiased")


class MKMMDLoss(nn.Module):
    """DAN's multi-kernel MMD² (the seed note's kernel family, summed).

    Bandwidths ``b·kernel_mul**(i − kernel_num//2)`` with ``b`` = ``fix_sigma`` or the
    batch's mean squared distance over pairs ``i ≠ j`` (detached, as the note's
    ``L2_distance.data``). Biased estimate ``ΣXX/n² + ΣYY/m² − 2ΣXY/(nm)``, equal to
    :func:`app.engine.measures.seed_mmd` (and to the note's ``mmd`` when ``n = m``).
    """

    def __init__(
        self, kernel_mul: float = 2.0, kernel_num: int = 5, fix_sigma: float | None = None
    ) -> None:
        super().__init__()
        if kernel_num < 1 or not kernel_mul > 0:
            raise ValueError("kernel_num must be ≥ 1 and kernel_mul > 0")
        self.kernel_mul = kernel_mul
        self.kernel_num = kernel_num
        self.fix_sigma = fix_sigma

    def forward(self, source: Tensor, target: Tensor) -> Tensor:
        """MK-MMD² between ``source`` (``n×d``) and ``target`` (``m×d``) as a 0-d tensor."""
        _check(source, target, 1)
        total = torch.cat([source, target])
        d = _sqdist(total, total)
        big_n = total.shape[0]
        if self.fix_sigma:
            width = float(self.fix_sigma)
        else:
            width = float(d.detach().sum()) / max(big_n * big_n - big_n, 1)
        if width <= 0:
            raise ValueError("all features are identical: the bandwidth is 0; set fix_sigma")
        base = width / self.kernel_mul ** (self.kernel_num // 2)
        k = sum(torch.exp(-d / (base * self.kernel_mul**i)) for i in range(self.kernel_num))
        assert isinstance(k, Tensor)
        n = source.shape[0]
        return _estimate(k[:n, :n], k[n:, n:], k[:n, n:], unbiased=False)


class MetricLoss(nn.Module):
    """A loss on a batch of embeddings (``n×d``) and their integer labels (``n``).

    Subclasses build a pytorch-metric-learning loss (and miner) in :meth:`_build`; this base
    checks the batch and calls them. Embeddings are L2-normalised inside (pml's default
    distances), so margins are on the unit sphere. A batch without a usable tuple (no two
    boxes of one label, or a single label) gives a zero loss that still has a graph.
    """

    min_labels: ClassVar[int] = 2

    def __init__(self) -> None:
        super().__init__()
        self._loss, self._miner = self._build()

    def _build(self) -> tuple[Any, Any]:
        """The pml loss and miner (``None``: every tuple of the batch)."""
        raise NotImplementedError(f"{type(self).__name__} must define _build")

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """The loss of the batch as a 0-d tensor.

        Raises:
            ValueError: not ``n×d`` with ``n`` labels, or non-finite values.
        """
        if embeddings.ndim != 2 or labels.ndim != 1 or labels.shape[0] != embeddings.shape[0]:
            raise ValueError(
                f"embeddings must be n×d with n labels, got {tuple(embeddings.shape)} and "
                f"{tuple(labels.shape)}"
            )
        if not torch.isfinite(embeddings).all():
            raise ValueError("embeddings hold NaN or infinite values; lower the learning rate")
        tuples = None if self._miner is None else self._miner(embeddings, labels)
        out: Tensor = self._loss(embeddings, labels, tuples)
        return out


METRIC_LOSSES: Registry[type[MetricLoss]] = Registry("metric loss")


@METRIC_LOSSES.register("triplet")
class TripletLoss(MetricLoss):
    """Triplet margin loss with batch-hard mining (Hermans et al. 2017, pml).

    For each anchor ``i`` with a positive and a negative in the batch:
    ``relu(max_p ‖e_i − e_p‖ − min_n ‖e_i − e_n‖ + margin)`` on L2-normalised embeddings;
    the mean over the anchors whose term is above 0 (pml's ``AvgNonZeroReducer``).

    Args:
        margin: the wanted gap between the hardest negative and the hardest positive.
        batch_hard: mine the hardest positive and negative per anchor (else every triplet).
    """

    def __init__(self, margin: float = 0.2, batch_hard: bool = True) -> None:
        if not margin >= 0:
            raise ValueError(f"margin must be 0 or more, got {margin}")
        self._options = (margin, batch_hard)
        super().__init__()

    def _build(self) -> tuple[Any, Any]:
        from pytorch_metric_learning import losses, miners

        margin, batch_hard = self._options
        miner = miners.BatchHardMiner() if batch_hard else None
        return losses.TripletMarginLoss(margin=margin), miner


@METRIC_LOSSES.register("npair")
class NPairLoss(MetricLoss):
    """Multi-class N-pair loss (Sohn 2016), pml's ``NPairsLoss``.

    One (anchor, positive) pair per label, the first of each label in batch order; with
    ``s_ij = a_i·p_j`` on L2-normalised embeddings the loss is the mean over pairs of
    ``−log(exp(s_ii) / Σ_j exp(s_ij))`` (softmax cross-entropy over the other labels'
    positives).
    """

    def _build(self) -> tuple[Any, Any]:
        from pytorch_metric_learning import losses

        return losses.NPairsLoss(), None


@METRIC_LOSSES.register("contrastive")
class ContrastiveLoss(MetricLoss):
    """Contrastive loss (Hadsell et al. 2006), pml's ``ContrastiveLoss``.

    Over every ordered pair ``i ≠ j`` on L2-normalised embeddings: positives
    ``relu(d_ij − pos_margin)``, negatives ``relu(neg_margin − d_ij)``; each kind averaged
    over its terms above 0, and the two summed.

    Args:
        pos_margin: distance below which positives cost nothing.
        neg_margin: distance above which negatives cost nothing.
    """

    def __init__(self, pos_margin: float = 0.0, neg_margin: float = 1.0) -> None:
        if not 0 <= pos_margin < neg_margin:
            raise ValueError(f"need 0 ≤ pos_margin < neg_margin, got {pos_margin} and {neg_margin}")
        self._options = (pos_margin, neg_margin)
        super().__init__()

    def _build(self) -> tuple[Any, Any]:
        from pytorch_metric_learning import losses

        pos_margin, neg_margin = self._options
        return losses.ContrastiveLoss(pos_margin=pos_margin, neg_margin=neg_margin), None


def get_metric_loss(name: str, **options: Any) -> MetricLoss:
    """A configured metric loss by name.

    Raises:
        KeyError: unknown name (the message lists the registered ones).
        ValueError: bad options.
    """
    cls = METRIC_LOSSES.lookup(name)
    try:
        return cls(**options)
    except TypeError as exc:
        raise ValueError(f"bad options for loss {name!r}: {exc}") from exc
