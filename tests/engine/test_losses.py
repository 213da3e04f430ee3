"""Training losses: values equal the measures, gradients pass gradcheck in float64."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from app.engine.losses import METRIC_LOSSES, MKMMDLoss, MMDLoss, get_metric_loss
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


# -- metric losses (pytorch-metric-learning) against the papers' formulas ----------------


def _batch(n: int, d: int, k: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % k  # every label at least twice when n ≥ 2k
    labels = labels[torch.randperm(n, generator=g)]
    return torch.randn(n, d, generator=g, dtype=torch.float64), labels


def _unit(e: torch.Tensor) -> list[np.ndarray]:
    rows = e.detach().numpy()
    return [r / np.sqrt((r * r).sum()) for r in rows]


def _dist(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(((a - b) ** 2).sum()))


def _naive_batch_hard_triplet(e: torch.Tensor, labels: torch.Tensor, margin: float) -> float:
    """Hermans et al. (2017): hardest positive and negative per anchor, hinge, mean of > 0."""
    u, y = _unit(e), labels.tolist()
    terms = []
    for i in range(len(u)):
        pos = [_dist(u[i], u[j]) for j in range(len(u)) if j != i and y[j] == y[i]]
        neg = [_dist(u[i], u[j]) for j in range(len(u)) if y[j] != y[i]]
        if pos and neg:
            terms.append(max(0.0, max(pos) - min(neg) + margin))
    kept = [t for t in terms if t > 0]
    return sum(kept) / len(kept) if kept else 0.0


def _naive_all_triplets(e: torch.Tensor, labels: torch.Tensor, margin: float) -> float:
    u, y = _unit(e), labels.tolist()
    terms = [
        max(0.0, _dist(u[a], u[p]) - _dist(u[a], u[n]) + margin)
        for a in range(len(u))
        for p in range(len(u))
        for n in range(len(u))
        if p != a and y[p] == y[a] and y[n] != y[a]
    ]
    kept = [t for t in terms if t > 0]
    return sum(kept) / len(kept) if kept else 0.0


def _naive_npair(e: torch.Tensor, labels: torch.Tensor) -> float:
    """Sohn (2016), multi-class N-pair: one (anchor, positive) per label, softmax over the
    positives of all labels. The pair of a label is its first box and that box's first
    other box of the same label (batch order)."""
    u, y = _unit(e), labels.tolist()
    pairs: dict[int, tuple[int, int]] = {}
    for a in range(len(u)):
        for p in range(len(u)):
            if p != a and y[p] == y[a] and y[a] not in pairs:
                pairs[y[a]] = (a, p)
    chosen = [pairs[k] for k in sorted(pairs)]
    total = 0.0
    for i, (a, _) in enumerate(chosen):
        s = [float(u[a] @ u[p]) for _, p in chosen]
        total += -(s[i] - np.log(sum(np.exp(v) for v in s)))
    return total / len(chosen)


def _naive_contrastive(e: torch.Tensor, labels: torch.Tensor, pos: float, neg: float) -> float:
    u, y = _unit(e), labels.tolist()
    pos_terms, neg_terms = [], []
    for i in range(len(u)):
        for j in range(len(u)):
            if i == j:
                continue
            d = _dist(u[i], u[j])
            if y[i] == y[j]:
                pos_terms.append(max(0.0, d - pos))
            else:
                neg_terms.append(max(0.0, neg - d))

    def avg(terms: list[float]) -> float:
        kept = [t for t in terms if t > 0]
        return sum(kept) / len(kept) if kept else 0.0

    return avg(pos_terms) + avg(neg_terms)


@pytest.mark.parametrize(("n", "d", "k", "seed"), [(7, 3, 3, 0), (13, 5, 4, 1), (31, 17, 2, 2)])
@pytest.mark.parametrize("margin", [0.05, 0.5, 2.0])
def test_batch_hard_triplet_equals_the_papers_formula(
    n: int, d: int, k: int, seed: int, margin: float
) -> None:
    e, y = _batch(n, d, k, seed)
    got = float(get_metric_loss("triplet", margin=margin)(e, y))
    assert got == pytest.approx(_naive_batch_hard_triplet(e, y, margin), rel=1e-10, abs=1e-12)


def test_triplet_without_mining_uses_every_triplet() -> None:
    e, y = _batch(9, 4, 3, 5)
    got = float(get_metric_loss("triplet", margin=0.3, batch_hard=False)(e, y))
    assert got == pytest.approx(_naive_all_triplets(e, y, 0.3), rel=1e-10)
    hard = float(get_metric_loss("triplet", margin=0.3)(e, y))
    assert hard != pytest.approx(got)  # mining changes the value: the option is honoured


@pytest.mark.parametrize(("n", "d", "k", "seed"), [(6, 3, 3, 3), (11, 6, 4, 4), (40, 9, 7, 5)])
def test_npair_equals_the_papers_formula(n: int, d: int, k: int, seed: int) -> None:
    e, y = _batch(n, d, k, seed)
    assert float(get_metric_loss("npair")(e, y)) == pytest.approx(_naive_npair(e, y), rel=1e-10)


@pytest.mark.parametrize(("pos", "neg"), [(0.0, 1.0), (0.3, 1.4)])
def test_contrastive_equals_the_papers_formula(pos: float, neg: float) -> None:
    e, y = _batch(12, 5, 3, 6)
    got = float(get_metric_loss("contrastive", pos_margin=pos, neg_margin=neg)(e, y))
    assert got == pytest.approx(_naive_contrastive(e, y, pos, neg), rel=1e-10)


@pytest.mark.parametrize(
    ("name", "options"),
    [("triplet", {"margin": 0.5}), ("npair", {}), ("contrastive", {"neg_margin": 1.5})],
)
def test_metric_losses_pass_gradcheck_in_float64(name: str, options: dict[str, float]) -> None:
    e, y = _batch(10, 4, 3, 7)
    e.requires_grad_(True)
    loss = get_metric_loss(name, **options)
    assert torch.autograd.gradcheck(lambda x: loss(x, y), (e,))
    (grad,) = torch.autograd.grad(loss(e, y), e)
    assert grad.abs().sum() > 0


def test_triplet_gradient_moves_the_hardest_pairs() -> None:
    # A step against the gradient lowers the loss: the value and its gradient agree.
    e, y = _batch(12, 6, 3, 8)
    e.requires_grad_(True)
    loss = get_metric_loss("triplet", margin=0.5)
    before = loss(e, y)
    (grad,) = torch.autograd.grad(before, e)
    after = loss((e - 0.05 * grad).detach(), y)
    assert float(after) < float(before.detach())


def test_metric_losses_registry_and_bad_input() -> None:
    assert set(METRIC_LOSSES) == {"triplet", "npair", "contrastive"}
    e, y = _batch(6, 3, 2, 9)
    with pytest.raises(KeyError, match="triplet"):
        get_metric_loss("arcface")
    with pytest.raises(ValueError, match="bad options"):
        get_metric_loss("npair", margin=1.0)
    with pytest.raises(ValueError, match="pos_margin"):
        get_metric_loss("contrastive", pos_margin=2.0, neg_margin=1.0)
    with pytest.raises(ValueError, match="n labels"):
        get_metric_loss("triplet")(e, y[:-1])
    with pytest.raises(ValueError, match="NaN"):
        get_metric_loss("triplet")(e * float("nan"), y)
    # One label only: no negative, a zero loss that still back-propagates.
    e.requires_grad_(True)
    zero = get_metric_loss("triplet")(e, torch.zeros(6, dtype=torch.long))
    assert float(zero.detach()) == 0.0
    zero.backward()
