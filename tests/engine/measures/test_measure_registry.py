"""Every registered measure: metadata, a value on awkward sizes, refusal of bad input."""

from __future__ import annotations

import pytest
import torch

from app.engine.measures import MEASURES, get_measure, list_measures
from app.engine.measures.base import Measure, register


@pytest.mark.parametrize("name", sorted(MEASURES))
def test_each_measure_runs_and_checks_its_input(name: str) -> None:
    m = get_measure(name)
    assert m.needs in ("gap", "grid", "pixels") and m.between in ("means", "sets")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(7, 40, generator=g, dtype=torch.float64)
    y = torch.randn(5, 40, generator=g, dtype=torch.float64) + 0.5
    value = m(x, y)
    assert isinstance(value, float)
    with pytest.raises(ValueError, match="NaN"):
        m(x, torch.full_like(y, float("nan")))
    with pytest.raises(ValueError, match="feature sizes"):
        m(x, y[:, :39])


def test_list_and_lookup() -> None:
    names = [row["name"] for row in list_measures()]
    assert names == sorted(MEASURES)
    assert {"euclidean", "mmd", "seed_mmd", "grassmann"} <= set(names)
    with pytest.raises(KeyError, match="use one of"):
        get_measure("manhattan")


def test_duplicate_names_are_refused() -> None:
    class Twice(Measure):
        name = "euclidean"

        def compute(self, x: torch.Tensor, y: torch.Tensor) -> float:
            return 0.0

    with pytest.raises(ValueError, match="already registered"):
        register(Twice)
