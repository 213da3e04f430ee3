"""Two-dimensional embeddings of descriptors: t-SNE (openTSNE) and PCA."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from openTSNE import TSNE
from torch import Tensor

from app.engine.measures.base import as_samples

__all__ = ["EmbedMethod", "embed", "max_perplexity"]

EmbedMethod = Literal["tsne", "pca"]


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


def embed(
    samples: Tensor,
    method: EmbedMethod = "tsne",
    *,
    perplexity: float | None = None,
    seed: int = 0,
) -> Tensor:
    """Place each row of ``samples`` (``n×d``) in the plane.

    ``"pca"`` projects the centred rows on their first two principal components (a
    component beyond the rank is 0; each sign is fixed so its largest loading is positive).
    ``"tsne"`` runs openTSNE (exact neighbours and Barnes–Hut for small ``n``, approximate
    neighbours and FFT interpolation for large ``n``; PCA initialisation; one thread), so
    the same ``seed`` gives the same result. Its ``perplexity`` defaults to
    ``min(30, (n − 1)/3)``; a larger one than ``(n − 1)/3`` is refused rather than silently
    clipped, because the result would not be the one asked for.

    Args:
        samples: ``n×d`` descriptors (``n ≥ 2`` for PCA, ``n ≥ 4`` for t-SNE).
        method: ``"tsne"`` or ``"pca"``.
        perplexity: t-SNE's effective neighbour count.
        seed: t-SNE's random state.

    Returns:
        ``n×2`` float64 coordinates.

    Raises:
        ValueError: unknown method, too few samples, bad values, perplexity out of range.
    """
    z = as_samples(samples, "samples", min_rows=2).to(torch.float64)
    n = z.shape[0]
    if method == "pca":
        return _pca(z)
    if method != "tsne":
        raise ValueError(f"unknown embedding method {method!r}; use 'tsne' or 'pca'")
    if n < 4:
        raise ValueError(f"t-SNE needs at least 4 samples, got {n}; use method='pca'")
    limit = max_perplexity(n)
    if perplexity is None:
        perplexity = min(30.0, limit)
    if not 0 < perplexity <= limit:
        raise ValueError(
            f"perplexity {perplexity} is out of range for {n} samples; use a value in "
            f"(0, {limit:.3g}] ((n − 1)/3) or more samples"
        )
    tsne = TSNE(
        n_components=2, perplexity=perplexity, initialization="pca", random_state=seed,
        n_jobs=1, verbose=False,
    )
    result = np.asarray(tsne.fit(z.numpy()), dtype=np.float64)
    return torch.from_numpy(result.copy())
