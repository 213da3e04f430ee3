"""All assignments of units to groups when they are few, seeded random ones otherwise."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor

from app.engine.inference.units import Scheme

__all__ = ["assignment_batches", "count_assignments", "fewest_more_units", "smallest_p"]


def count_assignments(scheme: Scheme) -> int:
    """Distinct assignments of elements to ``x``: the product over strata of
    ``C(size, k)`` (the observed assignment included)."""
    return math.prod(math.comb(len(s.elements), s.k) for s in scheme.strata)


def _exact(scheme: Scheme, batch: int) -> Iterator[Tensor]:
    n = len(scheme.element_sides)
    per_stratum = [itertools.combinations(s.elements, s.k) for s in scheme.strata]
    rows: list[list[int]] = []
    for choice in itertools.product(*[list(c) for c in per_stratum]):
        rows.append([e for part in choice for e in part])
        if len(rows) == batch:
            yield _indicator(rows, n)
            rows = []
    if rows:
        yield _indicator(rows, n)


def _indicator(rows: list[list[int]], n: int) -> Tensor:
    out = torch.zeros(len(rows), n, dtype=torch.bool)
    for r, picked in enumerate(rows):
        out[r, list(picked)] = True
    return out


def _random(scheme: Scheme, draws: int, seed: int, batch: int) -> Iterator[Tensor]:
    g = torch.Generator().manual_seed(seed)
    n = len(scheme.element_sides)
    strata = [(torch.tensor(s.elements, dtype=torch.long), s.k) for s in scheme.strata]
    for start in range(0, draws, batch):
        size = min(batch, draws - start)
        out = torch.zeros(size, n, dtype=torch.bool)
        for members, k in strata:
            if k == 0:
                continue
            # Each row: a uniformly random k-subset of the stratum, the k smallest of
            # uniforms (a selection, not a sort: numpy's introselect, twenty times
            # torch's kthvalue, same values); a row whose k-th value is tied picks by a
            # sort instead.
            u = torch.rand(size, members.numel(), generator=g)
            kth = np.partition(u.numpy(), k - 1, axis=1)[:, k - 1 : k]
            picked = u <= torch.from_numpy(kth)
            tied = picked.sum(1) != k
            if bool(tied.any()):
                order = u[tied].argsort(dim=1)[:, :k]
                picked[tied] = torch.zeros_like(picked[tied]).scatter_(1, order, True)
            if members.numel() == n:
                out = picked  # one stratum of every element, in order
            else:
                out[:, members] = picked
        yield out


def assignment_batches(
    scheme: Scheme, *, permutations: int, seed: int, batch: int = 256
) -> tuple[bool, int, Iterator[Tensor]]:
    """The assignments a test evaluates, as batches of element indicators (``True`` = ``x``).

    When the number ``N`` of distinct assignments is at most ``permutations``, all ``N``
    are enumerated (``itertools.combinations`` per stratum, their product across strata;
    the observed one is among them); otherwise ``permutations`` assignments are drawn
    uniformly at random with a seeded generator (repeats possible).

    Returns:
        ``(exact, count, batches)``: whether the enumeration is complete, how many
        assignments the batches hold, and the batches (``batch × elements`` bool).

    Raises:
        ValueError: ``permutations < 1`` or ``batch < 1``.
    """
    if permutations < 1:
        raise ValueError(f"permutations must be at least 1, got {permutations}")
    if batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}")
    total = count_assignments(scheme)
    if total <= permutations:
        return True, total, _exact(scheme, batch)
    return False, permutations, _random(scheme, permutations, seed, batch)


def smallest_p(
    null: Tensor, *, exact: bool, count: int, larger_is_extreme: bool, total: int
) -> float:
    """The smallest p-value the test could give with these units.

    Exact: the share of the enumerated null tied with its most extreme value (``2/70`` for
    4 vs 4 images under a symmetric statistic, where an assignment and its mirror tie).
    Random draws: ``1/(1 + P)``, never below ``1/N`` for ``N`` distinct assignments.
    """
    if not exact:
        # int / int: 1.0 / total overflows once C(n + m, n) passes 1e308.
        return max(1 / (1 + count), 1 / total)
    extreme = float(null.max() if larger_is_extreme else null.min())
    tol = _tolerance(extreme)
    ties = (null >= extreme - tol) if larger_is_extreme else (null <= extreme + tol)
    return int(ties.sum()) / count


def _tolerance(value: float) -> float:
    # Values equal up to rounding count as ties (as the row-level test always did).
    return 1e-9 * max(abs(value), 1e-300)


def fewest_more_units(n: int, m: int, alpha: float) -> int:
    """Fewest units ``K`` to add to each group so that ``n + K`` vs ``m + K`` units allow a
    p-value ≤ ``alpha`` under a symmetric statistic (``2/C`` for equal sizes, else ``1/C``
    with ``C = C(n + m + 2K, n + K)``).

    Raises:
        ValueError: ``alpha`` outside ``(0, 1)``.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    k = 0
    while True:
        a, b = n + k, m + k
        ties = 2 if a == b else 1
        if ties / math.comb(a + b, a) <= alpha:
            return k
        k += 1
