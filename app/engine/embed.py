"""Two-dimensional embeddings of descriptors: t-SNE (openTSNE) and PCA."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import torch
from openTSNE import TSNE
from torch import Tensor

from app.engine.measures.base import as_samples

__all__ = ["EmbedMethod", "embed", "max_perplexity"]

EmbedMethod = Literal["tsne", "pca"]

CANCEL_CHECK_EVERY_ITERS = 5
"""t-SNE iterations between two looks at ``cancelled()`` (an iteration on 5,000 boxes takes
tens of milliseconds, so a cancel is seen well within a second)."""

LARGE_TSNE = 10_000
"""From this many rows t-SNE takes its large-data settings: rows of more than
``TSNE_DIMS`` features are first projected on their top ``TSNE_DIMS`` principal components
(what openTSNE recommends; the neighbour search in 1,280 dimensions would dominate), and the
negative gradient uses FFT interpolation."""

TSNE_DIMS = 50
"""Principal components kept before a large t-SNE."""


def max_perplexity(n: int) -> float:
    """The largest perplexity t-SNE can honour for ``n`` samples: ``(n − 1) / 3``."""
    return (n - 1) / 3


def _pca(z: Tensor) -> Tensor:
    centred = z - z.mean(0)
    u, s, vh = torch.linalg.svd(centred, full_matrices=False)
    # Fix each component's sign (largest |loading| positive) so results are reproducible.
    signs = torch.sign(vh[torch.arange(vh.shape[0]), vh.abs().argmax(1)])
    signs[signs == 0] = 1
    out = torch.zeros(z.shape[0], 2, dtype=z.dtype)
    k = min(2, s.shape[0])
    out[:, :k] = (u[:, :k] * s[:k]) * signs[:k]
    return out


def _top_components(z: Tensor, k: int, chunk: int = 4096) -> Tensor:
    """``z`` (``n×d``, ``d > k``) centred and projected on its top ``k`` principal axes, in
    float64, from the ``d×d`` covariance summed over row chunks: no float64 or centred copy
    of ``z`` (50,000 × 1,280 would be 0.5 GB each). Each axis's sign is fixed so its
    largest loading is positive."""
    n, d = z.shape
    mean = z.sum(0, dtype=torch.float64) / n
    cov = torch.zeros(d, d, dtype=torch.float64)
    for i in range(0, n, chunk):
        c = z[i : i + chunk].to(torch.float64) - mean
        cov.addmm_(c.T, c)
    values, vectors = torch.linalg.eigh(cov)
    top = vectors[:, values.argsort(descending=True)[:k]]
    signs = torch.sign(top[top.abs().argmax(0), torch.arange(k)])
    signs[signs == 0] = 1
    top = top * signs
    out = torch.empty(n, k, dtype=torch.float64)
    for i in range(0, n, chunk):
        torch.mm(z[i : i + chunk].to(torch.float64) - mean, top, out=out[i : i + chunk])
    return out


def _stopper(cancelled: Callable[[], bool] | None) -> Callable[..., bool]:
    """An openTSNE callback that raises ``InterruptedError`` once ``cancelled()`` is true."""

    def stop(*_args: Any) -> bool:
        if cancelled is not None and cancelled():
            raise InterruptedError("cancelled")
        return False

    return stop


def embed(
    samples: Tensor,
    method: EmbedMethod = "tsne",
    *,
    perplexity: float | None = None,
    seed: int = 0,
    n_iter: int = 500,
    threads: int = 1,
    cancelled: Callable[[], bool] | None = None,
) -> Tensor:
    """Place each row of ``samples`` (``n×d``) in the plane.

    ``"pca"`` projects the centred rows on their first two principal components (a
    component beyond the rank is 0; each sign is fixed so its largest loading is positive).
    ``"tsne"`` runs openTSNE with PCA initialisation: exact neighbours and Barnes–Hut for
    small ``n``; from ``LARGE_TSNE`` rows, approximate neighbours (Annoy) on the top
    ``TSNE_DIMS`` principal components and FFT-interpolated gradients. The same ``seed``
    and ``threads`` give the same result. Its ``perplexity`` defaults to
    ``min(30, (n − 1)/3)``; a larger one than ``(n − 1)/3`` is refused rather than silently
    clipped, because the result would not be the one asked for.

    Args:
        samples: ``n×d`` descriptors (``n ≥ 2`` for PCA, ``n ≥ 4`` for t-SNE).
        method: ``"tsne"`` or ``"pca"``.
        perplexity: t-SNE's effective neighbour count.
        seed: t-SNE's random state.
        n_iter: t-SNE's optimisation steps after the early exaggeration (at least 1).
        threads: t-SNE's worker threads (at least 1).
        cancelled: polled before t-SNE's neighbour search and every
            ``CANCEL_CHECK_EVERY_ITERS`` optimisation steps; when it returns True the work
            stops.

    Returns:
        ``n×2`` float64 coordinates.

    Raises:
        ValueError: unknown method, too few samples, bad values, perplexity out of range.
        InterruptedError: ``cancelled()`` became true.
    """
    z = as_samples(samples, "samples", min_rows=2)
    n = z.shape[0]
    if method == "pca":
        return _pca(z.to(torch.float64))
    if method != "tsne":
        raise ValueError(f"unknown embedding method {method!r}; use 'tsne' or 'pca'")
    if n < 4:
        raise ValueError(f"t-SNE needs at least 4 samples, got {n}; use method='pca'")
    if n_iter < 1:
        raise ValueError(f"n_iter must be at least 1, got {n_iter}")
    if threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    limit = max_perplexity(n)
    if perplexity is None:
        perplexity = min(30.0, limit)
    if not 0 < perplexity <= limit:
        raise ValueError(
            f"perplexity {perplexity} is out of range for {n} samples; use a value in "
            f"(0, {limit:.3g}] ((n − 1)/3) or more samples"
        )
    stop = _stopper(cancelled)
    stop(0)
    large = n >= LARGE_TSNE
    if large and z.shape[1] > TSNE_DIMS:
        z = _top_components(z, TSNE_DIMS)
    z = z.to(torch.float64)
    # openTSNE ends the optimisation quietly with the embedding so far when a callback
    # returns True; raising instead keeps a half-optimised embedding from passing as a result.
    tsne = TSNE(
        n_components=2,
        perplexity=perplexity,
        initialization="pca",
        random_state=seed,
        n_iter=n_iter,
        n_jobs=threads,
        negative_gradient_method="fft" if large else "bh",
        verbose=False,
        callbacks=stop,
        callbacks_every_iters=CANCEL_CHECK_EVERY_ITERS,
    )
    result = np.asarray(tsne.fit(z.numpy()), dtype=np.float64)
    return torch.from_numpy(result.copy())
