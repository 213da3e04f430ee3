"""Holm and Benjamini–Hochberg equal statsmodels' multipletests."""

from __future__ import annotations

import numpy as np
import pytest
from statsmodels.stats.multitest import multipletests

from app.engine.inference import adjust


@pytest.mark.parametrize("method, reference", [("holm", "holm"), ("bh", "fdr_bh")])
@pytest.mark.parametrize("size", [1, 2, 7, 31])
def test_adjust_equals_statsmodels(method: str, reference: str, size: int) -> None:
    rng = np.random.default_rng(size)
    for _ in range(5):  # statsmodels' Holm costs ~35 ms a call
        p = rng.uniform(size=size) ** 3
        p[rng.uniform(size=size) < 0.2] = p[0]  # ties
        expected = multipletests(p, method=reference)[1]
        got = adjust(list(p), method)  # type: ignore[arg-type]
        np.testing.assert_allclose(np.array(got, dtype=float), expected, rtol=1e-13, atol=0)


def test_none_entries_stay_none_and_leave_the_family() -> None:
    p = [0.01, None, 0.04, 0.03, None]
    got = adjust(p, "holm")
    expected = multipletests([0.01, 0.04, 0.03], method="holm")[1]
    assert got[1] is None and got[4] is None
    np.testing.assert_allclose([got[0], got[2], got[3]], expected, rtol=1e-13)
    assert adjust([None, None], "bh") == [None, None]
    with pytest.raises(ValueError, match="unknown adjustment"):
        adjust([0.1], "bonferroni")  # type: ignore[arg-type]
