"""Permutation tests: the kernel-matrix fast path equals recomputation; size and power."""

from __future__ import annotations

import pytest
import torch

from app.engine.measures import euclidean, get_measure, mmd, permutation_test


def _pair(n: int, m: int, d: int, shift: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(n, d, generator=g, dtype=torch.float64),
        torch.randn(m, d, generator=g, dtype=torch.float64) + shift,
    )


@pytest.mark.parametrize("estimator", ["biased", "unbiased"])
@pytest.mark.parametrize("kernel", ["gaussian", "multi"])
def test_fast_mmd_null_equals_recomputing_each_permutation(estimator: str, kernel: str) -> None:
    x, y = _pair(13, 8, 3, 0.3, 0)
    opts = {"estimator": estimator, "kernel": kernel}
    fast = permutation_test("mmd", x, y, permutations=40, seed=5, **opts)

    def slow_mmd(a: torch.Tensor, b: torch.Tensor) -> float:
        return mmd(a, b, **opts)  # type: ignore[arg-type]

    slow = permutation_test(slow_mmd, x, y, permutations=40, seed=5)
    assert fast.statistic == pytest.approx(slow.statistic, rel=1e-10)
    torch.testing.assert_close(fast.null, slow.null, rtol=1e-9, atol=1e-12)
    assert fast.p_value == slow.p_value


def test_p_value_formula_and_reproducibility() -> None:
    x, y = _pair(10, 12, 4, 0.0, 1)
    r = permutation_test("euclidean", x, y, permutations=99, seed=3)
    hits = int((r.null >= r.statistic).sum())
    assert r.p_value == (1 + hits) / 100
    assert r.statistic == euclidean(x, y)
    again = permutation_test("euclidean", x, y, permutations=99, seed=3)
    assert torch.equal(r.null, again.null)


def test_similarity_measures_count_the_lower_tail() -> None:
    x, y = _pair(6, 6, 50, 0.0, 2)
    r = permutation_test("mutual_information", x, y, permutations=30, seed=0, bins=4)
    assert r.p_value == (1 + int((r.null <= r.statistic + 1e-9 * abs(r.statistic)).sum())) / 31


def test_size_under_the_null_is_close_to_alpha() -> None:
    rejections = 0
    for rep in range(200):
        x, y = _pair(20, 15, 3, 0.0, 1000 + rep)
        rejections += permutation_test("mmd", x, y, permutations=200, seed=rep).p_value <= 0.05
    assert 0.02 <= rejections / 200 <= 0.09


def test_detects_a_half_unit_mean_shift_in_16d() -> None:
    p_values = [
        permutation_test(
            "mmd", *_pair(100, 100, 16, 0.5, 50 + rep), permutations=200, seed=rep
        ).p_value
        for rep in range(10)
    ]
    assert max(p_values) <= 0.01


def test_bad_input() -> None:
    x, y = _pair(5, 5, 2, 0.0, 0)
    with pytest.raises(ValueError, match="permutations"):
        permutation_test("mmd", x, y, permutations=0)
    with pytest.raises(KeyError, match="unknown measure"):
        permutation_test("nope", x, y)
    with pytest.raises(ValueError, match="feature sizes"):
        permutation_test("mmd", x, torch.ones(3, 3))


def test_a_configured_measure_equals_the_name_with_options() -> None:
    x, y = _pair(7, 9, 30, 0.2, 4)
    by_name = permutation_test("mutual_information", x, y, permutations=25, seed=1, bins=4)
    configured = permutation_test(get_measure("mutual_information", bins=4), x, y,
                                  permutations=25, seed=1)
    assert configured.p_value == by_name.p_value
    torch.testing.assert_close(configured.null, by_name.null, rtol=0, atol=0)
    fast = permutation_test(get_measure("mmd", estimator="unbiased", sigma=2.0), x, y,
                            permutations=25, seed=1)
    assert fast.statistic == pytest.approx(mmd(x, y, estimator="unbiased", sigma=2.0), rel=1e-12)
    with pytest.raises(ValueError, match="already configured"):
        permutation_test(get_measure("mmd"), x, y, sigma=1.0)
    with pytest.raises(ValueError, match="at least 2"):
        permutation_test(get_measure("mmd", estimator="unbiased"), x[:1], y)
