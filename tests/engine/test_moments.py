"""Per-shard sufficient statistics reduce to the one-machine numbers (float64, 1e-9)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.covariance import OAS, LedoitWolf

from app.engine import moments as mo
from app.engine.measures.euclidean import euclidean
from app.engine.measures.mahalanobis import mahalanobis
from app.engine.measures.std_euclidean import std_euclidean

TOL = 1e-9


def _rows(rng: np.random.Generator, n: int, d: int, offset: float) -> np.ndarray:
    """Correlated rows far from the origin (the sums lose digits if the shift is not used)."""
    mix = rng.normal(size=(d, d)) / np.sqrt(d)
    return offset + rng.normal(size=(n, d)) @ mix + rng.normal(size=d)


def _sharded(rows: np.ndarray, shift: np.ndarray, cuts: list[int]) -> mo.Moments:
    parts = np.split(rows, cuts)
    total = mo.Moments.empty(shift)
    for part in parts:  # shards of any size, empty ones included
        total = total + mo.Moments.of(part, shift)
    return total


def _close(got: float, want: float) -> None:
    assert abs(got - want) <= TOL * max(1.0, abs(want)), (got, want)


@pytest.mark.parametrize(("n", "m", "d"), [(3199, 7, 5), (2, 41, 17), (64, 1, 33)])
def test_sharded_moments_equal_the_rows(n: int, m: int, d: int) -> None:
    rng = np.random.default_rng(n + d)
    x, y = _rows(rng, n, d, 40.0), _rows(rng, m, d, 39.0)
    shift = x[0]
    a = _sharded(x, shift, sorted(rng.integers(0, n, 4).tolist()))
    b = _sharded(y, shift, [0, m // 2])
    assert (a.count, b.count) == (n, m)
    np.testing.assert_allclose(a.mean, x.mean(0), rtol=TOL, atol=TOL)
    if n > 1:
        np.testing.assert_allclose(a.covariance(), np.cov(x.T, ddof=1), rtol=0, atol=TOL)
        fourth = (((x - x.mean(0)) ** 2).sum(1) ** 2).sum()
        _close(a.centred_fourth(), fourth)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    _close(mo.euclidean(a, b), euclidean(tx, ty))
    _close(mo.std_euclidean(a, b), std_euclidean(tx, ty))
    for shrinkage in ("ledoit_wolf", "oas"):
        _close(mo.mahalanobis(a, b, shrinkage), mahalanobis(tx, ty, shrinkage=shrinkage))


def test_shrunk_covariance_equals_sklearn_on_pooled_residuals() -> None:
    rng = np.random.default_rng(5)
    groups = [_rows(rng, n, 9, 3.0 * k) for k, n in enumerate([13, 1, 30])]
    shift = groups[0][3]
    resid = np.concatenate([g - g.mean(0) for g in groups if len(g) > 1])
    stats = [mo.Moments.of(g, shift) for g in groups]
    lw = LedoitWolf(assume_centered=True).fit(resid).covariance_
    oas = OAS(assume_centered=True).fit(resid).covariance_
    np.testing.assert_allclose(mo.shrunk_covariance(stats), lw, rtol=0, atol=TOL)
    np.testing.assert_allclose(mo.shrunk_covariance(stats, "oas"), oas, rtol=0, atol=TOL)


def test_label_moments_and_merge_follow_the_labels() -> None:
    rng = np.random.default_rng(2)
    rows = _rows(rng, 101, 6, 1.0)
    labels = [("cat", "dog", "owl")[i] for i in rng.integers(0, 3, 101)]
    shift = rows[7]
    whole = mo.label_moments(rows, labels, shift)
    halves = mo.merge(
        [
            mo.label_moments(rows[:40], labels[:40], shift),
            mo.label_moments(rows[40:], labels[40:], shift),
        ]
    )
    assert set(halves) == set(whole) == {"cat", "dog", "owl"}
    for name, stats in whole.items():
        mine = rows[[i for i, lab in enumerate(labels) if lab == name]]
        np.testing.assert_allclose(halves[name].mean, mine.mean(0), rtol=TOL, atol=TOL)
        np.testing.assert_allclose(stats.outer, halves[name].outer, rtol=TOL, atol=TOL)


def test_a_constant_feature_is_left_out_of_std_euclidean() -> None:
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(20, 4)), rng.normal(size=(9, 4)) + 1
    x[:, 2] = y[:, 2] = 0.3
    a, b = mo.Moments.of(x, x[0]), mo.Moments.of(y, x[0])
    assert a.variance()[2] == 0
    _close(mo.std_euclidean(a, b), std_euclidean(torch.from_numpy(x), torch.from_numpy(y)))


def test_bad_inputs_say_what_to_fix() -> None:
    with pytest.raises(ValueError, match="different shifts"):
        mo.Moments.of(np.ones((2, 3)), np.zeros(3)) + mo.Moments.of(np.ones((2, 3)), np.ones(3))
    with pytest.raises(ValueError, match="n×3"):
        mo.Moments.of(np.ones((2, 4)), np.zeros(3))
    with pytest.raises(ValueError, match="finite"):
        mo.Moments.of(np.array([[np.nan, 1.0]]), np.zeros(2))
    with pytest.raises(ValueError, match="too wide"):
        mo.Moments.empty(np.zeros(mo.MAX_WIDTH + 1))
    one = mo.Moments.of(np.ones((1, 3)), np.zeros(3))
    with pytest.raises(ValueError, match="at least 2 samples"):
        mo.mahalanobis(one, one)
    flat = mo.Moments.of(np.ones((4, 3)), np.zeros(3))
    with pytest.raises(ValueError, match="no spread"):
        mo.mahalanobis(flat, flat)


def test_distance_matrix_equals_the_measure_on_each_pair() -> None:
    rng = np.random.default_rng(9)
    groups = {name: _rows(rng, n, 4, 2.0) for name, n in [("a", 5), ("b", 12), ("c", 3)]}
    shift = groups["b"][0]
    stats = {name: mo.Moments.of(rows, shift) for name, rows in groups.items()}
    names = list(groups)
    for measure, reference in [
        ("euclidean", euclidean),
        ("std_euclidean", std_euclidean),
        ("mahalanobis", mahalanobis),
    ]:
        matrix = mo.distance_matrix(stats, measure)
        assert np.all(np.diag(matrix) == 0)
        for i, p in enumerate(names):
            for j, q in enumerate(names):
                if i != j:
                    want = reference(torch.from_numpy(groups[p]), torch.from_numpy(groups[q]))
                    _close(matrix[i, j], want)
    with pytest.raises(ValueError, match="unknown measure"):
        mo.distance_matrix(stats, "cosine")


def test_add_into_accumulates_in_place_and_leaves_the_parts_alone() -> None:
    rng = np.random.default_rng(4)
    rows = _rows(rng, 30, 3, 0.5)
    shift = rows[0]
    parts = [mo.label_moments(rows[k::3], ["a", "b"] * 5, shift) for k in range(3)]
    before = parts[0]["a"].outer.copy()
    total: dict[str, mo.Moments] = {}
    for part in parts:
        mo.add_into(total, part)
    np.testing.assert_array_equal(parts[0]["a"].outer, before)
    want = mo.label_moments(np.concatenate([rows[k::3] for k in range(3)]), ["a", "b"] * 15, shift)
    for name in ("a", "b"):
        assert total[name].count == want[name].count == 15
        np.testing.assert_allclose(total[name].outer, want[name].outer, rtol=1e-12)
        _close(total[name].centred_fourth(), want[name].centred_fourth())
