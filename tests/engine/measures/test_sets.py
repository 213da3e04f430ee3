"""Mutual information and Grassmann distances against sklearn, scipy and naive loops."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.linalg import subspace_angles
from sklearn.metrics import mutual_info_score, normalized_mutual_info_score

from app.engine.measures import get_measure, grassmann, mutual_information
from app.engine.measures.grassmann import principal_angles


def _naive_bins(v: np.ndarray, bins: int) -> np.ndarray:
    lo, hi = v.min(), v.max()
    out = np.empty(len(v), dtype=int)
    for i, value in enumerate(v):
        out[i] = min(int((value - lo) / (hi - lo) * bins), bins - 1)
    return out


@pytest.mark.parametrize(("size", "bins"), [(3199, 16), (50, 4), (7, 3)])
def test_mutual_information_matches_sklearn_on_the_same_bins(size: int, bins: int) -> None:
    rng = np.random.default_rng(size)
    a = rng.normal(size=size)
    b = 0.6 * a + rng.normal(size=size)
    la, lb = _naive_bins(a, bins), _naive_bins(b, bins)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    assert mutual_information(ta, tb, bins=bins) == pytest.approx(
        mutual_info_score(la, lb), abs=1e-12
    )
    assert mutual_information(ta, tb, bins=bins, normalised=True) == pytest.approx(
        normalized_mutual_info_score(la, lb), abs=1e-12
    )


def test_mutual_information_of_a_region_with_itself_is_its_entropy() -> None:
    a = torch.arange(64, dtype=torch.float64).reshape(8, 8)
    assert mutual_information(a, a, bins=4) == pytest.approx(math.log(4))
    assert mutual_information(a, a, bins=4, normalised=True) == pytest.approx(1.0)


def test_mutual_information_measure_uses_group_means_and_is_a_similarity() -> None:
    m = get_measure("mutual_information", bins=8)
    assert m.higher_is_better and m.needs == "grid"
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 200, generator=g, dtype=torch.float64)
    y = torch.randn(5, 200, generator=g, dtype=torch.float64)
    expected = mutual_information(x.mean(0), y.mean(0), bins=8)
    assert m(x, y) == pytest.approx(expected)


def test_mutual_information_bad_input() -> None:
    with pytest.raises(ValueError, match="common grid"):
        mutual_information(torch.ones(5), torch.ones(6))
    with pytest.raises(ValueError, match="NaN"):
        mutual_information(torch.tensor([1.0, float("nan")]), torch.ones(2))
    with pytest.raises(ValueError, match="constant"):
        mutual_information(torch.ones(5), torch.arange(5.0), normalised=True)
    with pytest.raises(ValueError, match="bins"):
        mutual_information(torch.arange(5.0), torch.arange(5.0), bins=1)
    assert mutual_information(torch.ones(5), torch.arange(5.0)) == 0.0


def _top_basis(s: np.ndarray, k: int) -> np.ndarray:
    _, _, vh = np.linalg.svd(s - s.mean(0), full_matrices=False)
    return vh[:k].T


@pytest.mark.parametrize(("n", "m", "d", "k"), [(40, 31, 9, 3), (3199, 25, 6, 4), (5, 7, 12, 1)])
def test_grassmann_metrics_match_scipy_subspace_angles(n: int, m: int, d: int, k: int) -> None:
    rng = np.random.default_rng(d)
    x = rng.normal(size=(n, d)) * np.linspace(3, 0.5, d)
    y = rng.normal(size=(m, d)) @ rng.normal(size=(d, d))
    bx, by = _top_basis(x, k), _top_basis(y, k)
    theta = subspace_angles(bx, by)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    want = {
        "geodesic": np.linalg.norm(theta),
        "chordal": np.linalg.norm(2 * np.sin(theta / 2)),
        "projection": np.linalg.norm(bx @ bx.T - by @ by.T) / math.sqrt(2),
        "binet_cauchy": math.sqrt(max(0.0, 1 - np.prod(np.cos(theta)) ** 2)),
        "fubini_study": math.acos(min(1.0, np.prod(np.cos(theta)))),
    }
    for metric, value in want.items():
        assert grassmann(tx, ty, k=k, metric=metric) == pytest.approx(value, abs=1e-9), metric  # type: ignore[arg-type]


def test_grassmann_energy_picks_k_and_same_subspace_is_zero() -> None:
    rng = np.random.default_rng(0)
    basis = rng.normal(size=(2, 10))
    x = torch.from_numpy(rng.normal(size=(30, 2)) @ basis)
    y = torch.from_numpy(rng.normal(size=(25, 2)) @ basis + 5.0)
    assert grassmann(x, y, energy=0.999) == pytest.approx(0.0, abs=1e-6)
    assert grassmann(x, y, k=2) == pytest.approx(0.0, abs=1e-6)


def test_grassmann_bad_input() -> None:
    x = torch.randn(4, 10, dtype=torch.float64)
    with pytest.raises(ValueError, match="rank"):
        grassmann(x, torch.randn(20, 10, dtype=torch.float64), k=4)
    with pytest.raises(ValueError, match="metric"):
        grassmann(x, x, k=1, metric="angle")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least 2"):
        grassmann(x[:1], x)
    with pytest.raises(ValueError, match="no spread"):
        grassmann(torch.ones(3, 4), x[:, :4])


@pytest.mark.parametrize(("n", "m", "d", "k"), [(40, 31, 9, 3), (3199, 25, 6, 4), (5, 7, 12, 1)])
def test_principal_angles_are_ascending_and_equal_scipys_reversed(
    n: int, m: int, d: int, k: int
) -> None:
    rng = np.random.default_rng(d + 100)
    x = rng.normal(size=(n, d)) * np.linspace(3, 0.5, d)
    y = rng.normal(size=(m, d)) @ rng.normal(size=(d, d))
    theta = principal_angles(torch.from_numpy(x), torch.from_numpy(y), k).numpy()
    want = subspace_angles(_top_basis(x, k), _top_basis(y, k))[::-1]  # scipy: descending
    assert np.all(np.diff(theta) >= 0)
    np.testing.assert_allclose(theta, want, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(("n", "m", "d", "k"), [(31, 17, 9, 3), (3199, 8, 5, 2), (3, 4, 7, 2)])
@pytest.mark.parametrize(
    "metric", ["geodesic", "chordal", "projection", "binet_cauchy", "fubini_study"]
)
def test_identical_subspaces_are_at_distance_zero_to_rounding(
    n: int, m: int, d: int, k: int, metric: str
) -> None:
    rng = np.random.default_rng(n)
    basis = rng.normal(size=(k, d))
    x = rng.normal(size=(n, k)) @ basis
    y = rng.normal(size=(m, k)) @ basis * 3.0 - 2.0
    assert np.all(subspace_angles(_top_basis(x, k), _top_basis(y, k)) <= 1e-12)
    got = grassmann(torch.from_numpy(x), torch.from_numpy(y), k=k, metric=metric)  # type: ignore[arg-type]
    assert 0 <= got <= 1e-12


@pytest.mark.parametrize("t", [1e-9, 1e-6, 0.3, 1.2])
def test_a_known_small_angle_is_measured_to_full_precision(t: float) -> None:
    # x spans (e1, e2), y spans (e1, cos t·e2 + sin t·e3): principal angles (0, t).
    rng = np.random.default_rng(7)
    e = np.eye(4)
    bx = np.stack([e[0], e[1]])
    by = np.stack([e[0], math.cos(t) * e[1] + math.sin(t) * e[2]])
    x = torch.from_numpy(rng.normal(size=(23, 2)) @ bx)
    y = torch.from_numpy(rng.normal(size=(11, 2)) @ by)
    np.testing.assert_allclose(principal_angles(x, y, 2).numpy(), [0.0, t], rtol=1e-9, atol=1e-15)
    want = {
        "geodesic": t,
        "chordal": 2 * math.sin(t / 2),
        "projection": math.sin(t),
        "binet_cauchy": math.sin(t),
        "fubini_study": t,
    }
    for metric, value in want.items():
        assert grassmann(x, y, k=2, metric=metric) == pytest.approx(value, rel=1e-8), metric  # type: ignore[arg-type]
