"""MMD estimators against naive loops, the seed note's code and alibi-detect's formula."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from app.engine.measures import get_measure, mmd, seed_mmd


# The seed note's code (../shared/seed/research-note-zh.txt), copied as the reference; only
# the unused `Variable` import is dropped and the layout is ruff-formatted.
def guassian_kernel(source, target, kernel_mul=2.0, kernel_num=5, fix_sigma=None):  # type: ignore[no-untyped-def]
    n_samples = int(source.size()[0]) + int(target.size()[0])
    total = torch.cat([source, target], dim=0)
    total0 = total.unsqueeze(0).expand(int(total.size(0)), int(total.size(0)), int(total.size(1)))
    total1 = total.unsqueeze(1).expand(int(total.size(0)), int(total.size(0)), int(total.size(1)))
    L2_distance = ((total0 - total1) ** 2).sum(2)
    if fix_sigma:
        bandwidth = fix_sigma
    else:
        bandwidth = torch.sum(L2_distance.data) / (n_samples**2 - n_samples)
    bandwidth /= kernel_mul ** (kernel_num // 2)
    bandwidth_list = [bandwidth * (kernel_mul**i) for i in range(kernel_num)]
    kernel_val = [torch.exp(-L2_distance / bandwidth_temp) for bandwidth_temp in bandwidth_list]
    return sum(kernel_val)  # /len(kernel_val)


def seed_reference(source, target, kernel_mul=2.0, kernel_num=5, fix_sigma=None):  # type: ignore[no-untyped-def]
    batch_size = int(source.size()[0])
    kernels = guassian_kernel(
        source, target, kernel_mul=kernel_mul, kernel_num=kernel_num, fix_sigma=fix_sigma
    )
    XX = kernels[:batch_size, :batch_size]
    YY = kernels[batch_size:, batch_size:]
    XY = kernels[:batch_size, batch_size:]
    YX = kernels[batch_size:, :batch_size]
    loss = torch.mean(XX + YY - XY - YX)
    return loss


def _k(a: np.ndarray, b: np.ndarray, sigmas: list[float]) -> float:
    d2 = float(((a - b) ** 2).sum())
    return sum(math.exp(-d2 / (2 * s * s)) for s in sigmas) / len(sigmas)


def _naive(x: np.ndarray, y: np.ndarray, sigmas: list[float], unbiased: bool) -> float:
    n, m = len(x), len(y)
    sxx = sum(_k(x[i], x[j], sigmas) for i in range(n) for j in range(n) if not unbiased or i != j)
    syy = sum(_k(y[i], y[j], sigmas) for i in range(m) for j in range(m) if not unbiased or i != j)
    sxy = sum(_k(x[i], y[j], sigmas) for i in range(n) for j in range(m))
    if unbiased:
        # alibi-detect's torch mmd2 (alibi_detect/utils/pytorch/distance.py) computes
        # (ΣKxx − tr)/(n(n−1)) + (ΣKyy − tr)/(m(m−1)) − 2·mean(Kxy): the same U-statistic.
        return sxx / (n * (n - 1)) + syy / (m * (m - 1)) - 2 * sxy / (n * m)
    return sxx / n**2 + syy / m**2 - 2 * sxy / (n * m)


def _pair(
    n: int, m: int, d: int, shift: float = 0.4, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(n, d, generator=g, dtype=torch.float64),
        torch.randn(m, d, generator=g, dtype=torch.float64) + shift,
    )


@pytest.mark.parametrize(("n", "m", "d"), [(13, 7, 5), (2, 3, 4), (30, 31, 3)])
@pytest.mark.parametrize("sigma", [1.3, [0.5, 1.0, 4.0]])
@pytest.mark.parametrize("estimator", ["biased", "unbiased"])
def test_quadratic_estimators_match_a_naive_double_loop(
    n: int, m: int, d: int, sigma: float | list[float], estimator: str
) -> None:
    x, y = _pair(n, m, d)
    sig = [sigma] if isinstance(sigma, float) else sigma
    ref = _naive(x.numpy(), y.numpy(), sig, estimator == "unbiased")
    for block in (3, 2048):  # tiny blocks straddle nothing and still give the same sums
        got = mmd(x, y, estimator=estimator, sigma=sigma, block_size=block)  # type: ignore[arg-type]
        assert got == pytest.approx(ref, rel=1e-10, abs=1e-13)


def test_unbiased_is_negative_sometimes_on_the_same_distribution() -> None:
    values = [
        mmd(*_pair(8, 9, 3, shift=0.0, seed=s), estimator="unbiased", sigma=1.0) for s in range(20)
    ]
    assert min(values) < 0 < max(values)


@pytest.mark.parametrize(("n", "m"), [(11, 8), (9, 9), (3199, 2)])
def test_linear_estimator_matches_gretton_pairs_loop(n: int, m: int) -> None:
    x, y = _pair(n, m, 4)
    xs, ys = x.numpy(), y.numpy()
    p = min(n, m) // 2
    h = [
        _k(xs[2 * i], xs[2 * i + 1], [1.1])
        + _k(ys[2 * i], ys[2 * i + 1], [1.1])
        - _k(xs[2 * i], ys[2 * i + 1], [1.1])
        - _k(xs[2 * i + 1], ys[2 * i], [1.1])
        for i in range(p)
    ]
    assert mmd(x, y, estimator="linear", sigma=1.1) == pytest.approx(float(np.mean(h)), rel=1e-12)


def test_median_heuristic_sigma() -> None:
    x, y = _pair(17, 12, 6)
    z = np.vstack([x.numpy(), y.numpy()])
    d2 = [((z[i] - z[j]) ** 2).sum() for i in range(len(z)) for j in range(i + 1, len(z))]
    sigma = math.sqrt(float(np.median(d2)) / 2)
    assert mmd(x, y) == pytest.approx(mmd(x, y, sigma=sigma), rel=1e-12)


def test_median_heuristic_subsample_is_seeded() -> None:
    x, y = _pair(900, 700, 3)
    assert mmd(x, y, seed=4) == mmd(x, y, seed=4)


@pytest.mark.parametrize(("n", "m"), [(10, 10), (3, 3), (40, 40)])
@pytest.mark.parametrize("fix_sigma", [None, 3.0])
@pytest.mark.parametrize(("mul", "num"), [(2.0, 5), (3.0, 4), (2.0, 1)])
def test_seed_mmd_returns_the_seed_code_numbers(
    n: int, m: int, fix_sigma: float | None, mul: float, num: int
) -> None:
    x, y = _pair(n, m, 7)
    ref = float(seed_reference(x, y, kernel_mul=mul, kernel_num=num, fix_sigma=fix_sigma))
    got = seed_mmd(x, y, kernel_mul=mul, kernel_num=num, fix_sigma=fix_sigma)
    assert got == pytest.approx(ref, rel=1e-11)


@pytest.mark.parametrize(("n", "m"), [(9, 5), (5, 9), (1, 6), (31, 2)])
@pytest.mark.parametrize("fix_sigma", [None, 2.5])
def test_seed_mmd_with_unequal_sizes_is_the_biased_estimate_of_the_summed_kernel(
    n: int, m: int, fix_sigma: float | None
) -> None:
    x, y = _pair(n, m, 3, shift=1.0)
    k = guassian_kernel(x, y, fix_sigma=fix_sigma)  # the note's kernel on the pooled samples
    want = float(k[:n, :n].mean() + k[n:, n:].mean() - 2 * k[:n, n:].mean())
    got = seed_mmd(x, y, fix_sigma=fix_sigma)
    assert got == pytest.approx(want, rel=1e-12)
    # The check has power: the sets differ, and the unbiased estimate of the same kernel
    # (what a mix-up of estimators would return) is another number.
    assert want > 0.05
    unbiased = float(
        (k[:n, :n].sum() - k[:n, :n].trace()) / max(n * (n - 1), 1)
        + (k[n:, n:].sum() - k[n:, n:].trace()) / max(m * (m - 1), 1)
        - 2 * k[:n, n:].mean()
    )
    assert abs(got - unbiased) > 1e-3


def test_multi_kernel_is_the_seed_kernel_averaged() -> None:
    x, y = _pair(12, 12, 5)
    assert mmd(x, y, kernel="multi") == pytest.approx(seed_mmd(x, y) / 5, rel=1e-12)
    assert mmd(x, y, kernel="multi", kernel_mul=3.0, kernel_num=3) == pytest.approx(
        seed_mmd(x, y, kernel_mul=3.0, kernel_num=3) / 3, rel=1e-12
    )


def test_float32_blocks_agree_with_float64() -> None:
    x, y = _pair(300, 257, 32)
    a = mmd(x.float(), y.float(), kernel="multi", block_size=64)
    b = mmd(x, y, kernel="multi")
    assert a == pytest.approx(b, rel=1e-4)


def test_registry_metadata() -> None:
    m = get_measure("mmd")
    assert (m.higher_is_better, m.needs, m.between) == (False, "pixels", "sets")


def test_mmd_bad_input() -> None:
    x, y = _pair(5, 4, 3)
    with pytest.raises(ValueError, match="estimator"):
        mmd(x, y, estimator="quadratic")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least 2"):
        mmd(x[:1], y, estimator="unbiased")
    with pytest.raises(ValueError, match="at least 2"):
        mmd(x, y[:1], estimator="linear")
    with pytest.raises(ValueError, match="sigma"):
        mmd(x, y, sigma=-1.0)
    with pytest.raises(ValueError, match="kernel"):
        mmd(x, y, kernel="laplace")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="NaN"):
        mmd(torch.full((3, 3), float("nan")), y)
    with pytest.raises(ValueError, match="feature sizes"):
        seed_mmd(x, torch.ones(4, 2))
    with pytest.raises(ValueError, match="identical"):
        seed_mmd(torch.ones(3, 2), torch.ones(3, 2))
