"""Mean-based measures against scipy and sklearn, in float64 on awkward sizes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial import distance
from sklearn.covariance import OAS, LedoitWolf

from app.engine.measures import cosine, euclidean, mahalanobis, std_euclidean
from app.engine.measures.mahalanobis import ledoit_wolf, oas

SIZES = [(3, 5, 7), (1, 4, 3), (40, 17, 64), (3199, 5, 9)]


def _pair(n: int, m: int, d: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = torch.randn(m, d, generator=g, dtype=torch.float64) * 1.7 + 0.3
    return x, y


@pytest.mark.parametrize(("n", "m", "d"), SIZES)
def test_euclidean_cosine_seuclidean_match_scipy(n: int, m: int, d: int) -> None:
    x, y = _pair(n, m, d)
    a, b = x.mean(0).numpy(), y.mean(0).numpy()
    assert euclidean(x, y) == pytest.approx(distance.euclidean(a, b), rel=1e-12)
    assert cosine(x, y) == pytest.approx(distance.cosine(a, b), rel=1e-10, abs=1e-14)
    v = np.var(np.vstack([x.numpy(), y.numpy()]), axis=0, ddof=1)
    assert std_euclidean(x, y) == pytest.approx(distance.seuclidean(a, b, v), rel=1e-12)


def test_std_euclidean_skips_constant_features() -> None:
    x, y = _pair(6, 4, 5)
    x[:, 2] = 3.0
    y[:, 2] = 3.0
    keep = [0, 1, 3, 4]
    assert std_euclidean(x, y) == pytest.approx(std_euclidean(x[:, keep], y[:, keep]))


@pytest.mark.parametrize(
    ("n", "m", "d"), [(5, 7, 3), (12, 9, 30), (1, 6, 4), (3199, 40, 8), (1, 3, 50), (40, 31, 257)]
)
@pytest.mark.parametrize("kind", ["ledoit_wolf", "oas"])
def test_mahalanobis_matches_scipy_with_sklearn_shrinkage(
    n: int, m: int, d: int, kind: str
) -> None:
    x, y = _pair(n, m, d, seed=3)
    parts = [s - s.mean(0) for s in (x.numpy(), y.numpy()) if len(s) > 1]
    resid = np.vstack(parts)
    est = LedoitWolf(assume_centered=True) if kind == "ledoit_wolf" else OAS(assume_centered=True)
    cov = est.fit(resid).covariance_
    ours = (ledoit_wolf if kind == "ledoit_wolf" else oas)(torch.from_numpy(resid))
    np.testing.assert_allclose(ours.numpy(), cov, rtol=1e-10, atol=1e-13)
    ref = distance.mahalanobis(x.mean(0).numpy(), y.mean(0).numpy(), np.linalg.inv(cov))
    assert mahalanobis(x, y, shrinkage=kind) == pytest.approx(ref, rel=1e-9)  # type: ignore[arg-type]


def test_mahalanobis_with_more_features_than_samples_is_finite() -> None:
    x, y = _pair(4, 3, 50)
    assert mahalanobis(x, y) > 0


def test_one_row_each_compares_descriptors() -> None:
    a = torch.tensor([[3.0, 4.0]], dtype=torch.float64)
    assert euclidean(a, torch.zeros(1, 2, dtype=torch.float64)) == 5.0
    assert euclidean(torch.tensor([3.0, 4.0]), torch.tensor([0.0, 0.0])) == 5.0


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: cosine(torch.zeros(2, 3), torch.ones(2, 3)), "zero mean"),
        (lambda: euclidean(torch.ones(2, 3), torch.ones(2, 4)), "different feature sizes"),
        (lambda: euclidean(torch.tensor([[1.0, float("nan")]]), torch.ones(1, 2)), "NaN"),
        (lambda: euclidean(torch.tensor([[1.0, float("inf")]]), torch.ones(1, 2)), "NaN or Inf"),
        (lambda: euclidean(torch.ones(0, 3), torch.ones(2, 3)), "at least 1"),
        (lambda: euclidean(torch.ones(2, 3, 4), torch.ones(2, 3, 4)), "2-D"),
        (lambda: mahalanobis(torch.ones(1, 3), torch.zeros(1, 3)), "at least 2"),
        (lambda: mahalanobis(torch.ones(2, 3), torch.zeros(2, 3)), "no spread"),
        (lambda: mahalanobis(torch.eye(3), torch.eye(3), shrinkage="plain"), "shrinkage"),  # type: ignore[arg-type]
        (lambda: std_euclidean(torch.ones(1, 3), torch.empty(0, 3)), "at least 1"),
    ],
)
def test_bad_input_raises_a_clear_value_error(call: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()  # type: ignore[operator]


@pytest.mark.parametrize(("n", "m", "d"), [(6, 5, 40), (3, 2, 9), (30, 25, 7)])
@pytest.mark.parametrize("kind", ["ledoit_wolf", "oas"])
def test_whitened_rows_are_apart_by_their_mahalanobis_distances(
    n: int, m: int, d: int, kind: str
) -> None:
    """Both routes (the residuals' Gram matrix when they are fewer than the features, a
    Cholesky factor otherwise) against scipy's ``cdist`` with sklearn's covariance."""
    from app.engine.measures.mahalanobis import pooled_residuals, whitened

    x, y = _pair(n, m, d, seed=5)
    resid = pooled_residuals(x, y)
    est = LedoitWolf(assume_centered=True) if kind == "ledoit_wolf" else OAS(assume_centered=True)
    vi = np.linalg.inv(est.fit(resid.numpy()).covariance_)
    rows = torch.cat([x, y])
    want = distance.cdist(rows.numpy(), rows.numpy(), "mahalanobis", VI=vi)
    white = whitened(rows, resid, kind)  # type: ignore[arg-type]
    apart = torch.cdist(white, white, compute_mode="donot_use_mm_for_euclid_dist")
    np.testing.assert_allclose(apart.numpy(), want, rtol=1e-9, atol=1e-9)
