"""p-values adjusted across a family of tests (a distance matrix's pairs)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

__all__ = ["Adjustment", "adjust"]

Adjustment = Literal["holm", "bh"]


def adjust(p_values: Sequence[float | None], method: Adjustment = "holm") -> list[float | None]:
    """Adjusted p-values, in the input order.

    ``holm``: Holm's step-down, controls the family-wise error rate. ``bh``:
    Benjamini–Hochberg step-up, controls the false discovery rate (statsmodels'
    ``multipletests`` ``"holm"`` and ``"fdr_bh"``). ``None`` entries (tests that could not
    be made) stay ``None`` and are not counted in the family.

    Raises:
        ValueError: an unknown method or a p-value outside ``[0, 1]``.
    """
    if method not in ("holm", "bh"):
        raise ValueError(f"unknown adjustment {method!r}; use 'holm' or 'bh'")
    present = [(i, float(p)) for i, p in enumerate(p_values) if p is not None]
    if any(not 0 <= p <= 1 for _, p in present):
        raise ValueError("p-values must lie in [0, 1]")
    out: list[float | None] = [None] * len(p_values)
    m = len(present)
    order = sorted(present, key=lambda t: t[1])
    if method == "holm":
        running = 0.0
        for rank, (i, p) in enumerate(order):
            running = max(running, min(1.0, (m - rank) * p))
            out[i] = running
    else:
        running = 1.0
        for rank in range(m - 1, -1, -1):
            i, p = order[rank]
            running = min(running, m * p / (rank + 1))
            out[i] = min(1.0, running)
    return out
