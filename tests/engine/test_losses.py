"""Training losses: values equal the measures, gradients pass gradcheck in float64."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from app.engine.losses import MKMMDLoss, MMDLoss
from app.engine.measures import mmd, seed_mmd


def _pair(n: int, m: int, d: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(n * 100 + m)
    return (
        torch.randn(n, d, generator=g, dtype=torch.float64),
        torch.randn(m, d, generator=g, dtype=torch.float64) + 0.3,
    )


@pytest.mark.parametrize("estimator", ["biased", "unbiased"])
@pytest.mark.parametrize("sigma", [None, 1.7])
def test_mmd_loss_equals_the_measure(estimator: str, sigma: float | None) -> None:
    x, y = _pair(9, 6)
    loss = MMDLoss(sigma=sigma, estimator=estimator)(x, y)  # type: ignore[arg-type]
    assert float(loss) == pytest.approx(mmd(x, y, sigma=sigma, estimator=estimator), rel=1e-10)  # type: ignore[arg-type]


def test_mmd_loss_median_bandwidth_is_the_measures_at_an_even_number_of_pairs() -> None:
    # 5 + 7 rows give 66 pairs: the median is the mean of the two middle distances.
    x, y = _pair(5, 7)
    z = torch.cat([x, y]).numpy()
    sq = ((z[:, None, :] - z[None, :, :]) ** 2).sum(-1)[np.triu_indices(12, 1)]
    sigma = float(np.sqrt(np.median(sq) / 2))
    loss = float(MMDLoss(sigma=None)(x, y))
    assert loss == pytest.approx(float(MMDLoss(sigma=sigma)(x, y)), rel=1e-12)
    assert loss == pytest.approx(mmd(x, y, sigma=None), rel=1e-12)


@pytest.mark.parametrize("fix_sigma", [None, 2.5])
def test_mk_mmd_loss_equals_seed_mmd(fix_sigma: float | None) -> None:
    x, y = _pair(7, 11)
    loss = MKMMDLoss(fix_sigma=fix_sigma)(x, y)
    assert float(loss) == pytest.approx(seed_mmd(x, y, fix_sigma=fix_sigma), rel=1e-10)


@pytest.mark.parametrize(
    "loss", [MMDLoss(sigma=1.3), MMDLoss(sigma=0.9, estimator="unbiased"), MKMMDLoss(fix_sigma=3.0)]
)
def test_gradcheck_float64_unequal_sizes(loss: torch.nn.Module) -> None:
    x, y = _pair(5, 3)
    x.requires_grad_(True)
    y.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: loss(a, b), (x, y))


def test_data_dependent_bandwidth_is_not_differentiated_but_gradients_flow() -> None:
    x, y = _pair(6, 4)
    x.requires_grad_(True)
    MKMMDLoss()(x, y).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_losses_train_a_projection_to_close_the_gap() -> None:
    x, y = _pair(32, 24, d=6)
    w = torch.randn(6, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    w.requires_grad_(True)
    loss_fn = MMDLoss(sigma=1.0)
    first = float(loss_fn(x @ w, y @ w).detach())
    for _ in range(30):  # plain gradient descent on the projection
        loss = loss_fn(x @ w, y @ w)
        (grad,) = torch.autograd.grad(loss, w)
        with torch.no_grad():
            w -= 2.0 * grad
    assert float(loss_fn(x @ w, y @ w).detach()) < 0.9 * first


def test_bad_input() -> None:
    x, y = _pair(4, 4)
    with pytest.raises(ValueError, match="one d"):
        MMDLoss()(x, y[:, :3])
    with pytest.raises(ValueError, match="at least 2"):
        MMDLoss(estimator="unbiased")(x[:1], y)
    with pytest.raises(ValueError, match="NaN"):
        MKMMDLoss()(x * float("nan"), y)
    with pytest.raises(ValueError, match="sigma"):
        MMDLoss(sigma=0.0)
    with pytest.raises(ValueError, match="identical"):
        MKMMDLoss()(torch.ones(2, 2), torch.ones(2, 2))
