"""Embeddings: PCA against sklearn, seeded t-SNE determinism and structure, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA

from app.engine.embed import embed


def _clusters(n: int, seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    g = torch.Generator().manual_seed(seed)
    labels = np.arange(n) % 3
    centres = torch.randn(3, 12, generator=g, dtype=torch.float64) * 8
    x = centres[labels] + torch.randn(n, 12, generator=g, dtype=torch.float64)
    return x, labels


@pytest.mark.parametrize(("n", "d"), [(37, 12), (3, 5), (2, 1)])
def test_pca_matches_sklearn_up_to_sign(n: int, d: int) -> None:
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(n), dtype=torch.float64)
    got = embed(x, "pca").numpy()
    k = min(2, n, d)
    want = PCA(n_components=k).fit_transform(x.numpy())
    for c in range(k):
        sign = np.sign(got[:, c] @ want[:, c]) or 1.0
        np.testing.assert_allclose(got[:, c], sign * want[:, c], atol=1e-9)
    assert got.shape == (n, 2)


def test_tsne_same_seed_same_result_and_clusters_stay_apart() -> None:
    x, labels = _clusters(60)
    a = embed(x, "tsne", perplexity=10, seed=3)
    b = embed(x, "tsne", perplexity=10, seed=3)
    assert torch.equal(a, b) and a.shape == (60, 2)
    pts = a.numpy()
    centres = np.stack([pts[labels == k].mean(0) for k in range(3)])
    spread = max(np.linalg.norm(pts[labels == k] - centres[k], axis=1).mean() for k in range(3))
    gaps = min(np.linalg.norm(centres[i] - centres[j]) for i in range(3) for j in range(i))
    assert gaps > 2 * spread


def test_tsne_default_perplexity_fits_small_n() -> None:
    x, _ = _clusters(10)
    assert embed(x, "tsne").shape == (10, 2)


def test_bad_input() -> None:
    x, _ = _clusters(10)
    with pytest.raises(ValueError, match="perplexity"):
        embed(x, "tsne", perplexity=3.5)  # (10 − 1)/3 = 3
    with pytest.raises(ValueError, match="at least 4"):
        embed(x[:3], "tsne")
    with pytest.raises(ValueError, match="method"):
        embed(x, "umap")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="NaN"):
        embed(torch.full((5, 2), float("nan")), "pca")
    with pytest.raises(ValueError, match="at least 2"):
        embed(x[:1], "pca")


def test_tsne_cancel_stops_within_a_few_iterations_and_no_cancel_changes_nothing() -> None:
    from openTSNE import TSNE

    from app.engine.embed import CANCEL_CHECK_EVERY_ITERS

    x, _ = _clusters(53, seed=5)
    looks: list[int] = []

    def cancelled() -> bool:
        looks.append(1)
        return len(looks) > 4  # the look before the neighbours, then three during t-SNE

    with pytest.raises(InterruptedError, match="cancelled"):
        embed(x, "tsne", perplexity=7, seed=2, cancelled=cancelled)
    assert len(looks) == 5
    # The watching callback leaves the optimisation as openTSNE runs it without one.
    plain = TSNE(
        n_components=2, perplexity=7, initialization="pca", random_state=2, n_jobs=1, verbose=False
    ).fit(x.numpy())
    watched = embed(x, "tsne", perplexity=7, seed=2, cancelled=lambda: False)
    np.testing.assert_array_equal(watched.numpy(), np.asarray(plain, dtype=np.float64))
    assert CANCEL_CHECK_EVERY_ITERS <= 10


def test_tsne_runs_the_iterations_asked_for() -> None:
    import numpy as np
    from openTSNE import TSNE

    x = torch.from_numpy(np.random.default_rng(4).normal(size=(37, 5)))
    got = embed(x, "tsne", perplexity=5.0, seed=3, n_iter=40)
    want = np.asarray(
        TSNE(
            n_components=2,
            perplexity=5.0,
            initialization="pca",
            random_state=3,
            n_jobs=1,
            n_iter=40,
        ).fit(x.numpy())
    )
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-9, atol=1e-9)
    assert not torch.allclose(got, embed(x, "tsne", perplexity=5.0, seed=3, n_iter=400))
    with pytest.raises(ValueError, match="n_iter"):
        embed(x, "tsne", n_iter=0)


def test_top_components_match_sklearn_pca_with_fixed_signs() -> None:
    from app.engine.embed import _top_components

    x = torch.randn(203, 77, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    x = x * torch.linspace(3.0, 0.1, 77, dtype=torch.float64)  # distinct variances
    got = _top_components(x, 5).numpy()
    pca = PCA(n_components=5).fit(x.numpy())
    want = pca.transform(x.numpy())
    signs = np.sign(pca.components_[np.arange(5), np.abs(pca.components_).argmax(1)])
    np.testing.assert_allclose(got, want * signs, atol=1e-9)


def test_large_tsne_runs_fft_on_the_top_components(monkeypatch: pytest.MonkeyPatch) -> None:
    from openTSNE import TSNE

    import app.engine.embed as embed_module

    monkeypatch.setattr(embed_module, "LARGE_TSNE", 60)
    monkeypatch.setattr(embed_module, "TSNE_DIMS", 4)
    x, _ = _clusters(83, seed=1)
    got = embed(x, "tsne", perplexity=9, seed=5, n_iter=30)
    projected = embed_module._top_components(x, 4).numpy()
    want = TSNE(
        n_components=2,
        perplexity=9,
        initialization="pca",
        random_state=5,
        n_jobs=1,
        n_iter=30,
        negative_gradient_method="fft",
    ).fit(projected)
    np.testing.assert_allclose(got.numpy(), np.asarray(want), rtol=1e-9, atol=1e-9)
    plain = TSNE(
        n_components=2, perplexity=9, initialization="pca", random_state=5, n_jobs=1, n_iter=30
    ).fit(x.numpy())
    assert not np.allclose(got.numpy(), np.asarray(plain))
