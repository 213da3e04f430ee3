"""Measure options: declared once with bounds, checked at construction, shown as a schema."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from app.engine.measures import MEASURES, get_measure, grassmann, list_measures, mmd, seed_mmd
from app.engine.measures.base import NoOptions


def _pair(n: int = 9, m: int = 6, d: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(11)
    return (
        torch.randn(n, d, generator=g, dtype=torch.float64),
        torch.randn(m, d, generator=g, dtype=torch.float64) + 0.4,
    )


@pytest.mark.parametrize("name", sorted(MEASURES))
def test_unknown_and_test_keys_are_refused_naming_the_known_options(name: str) -> None:
    cls = MEASURES[name]
    known = list(cls.Options.model_fields)
    with pytest.raises(ValueError, match="unknown option") as err:
        get_measure(name, foo=1)
    message = str(err.value)
    assert all(k in message for k in known)
    if not known:
        assert "takes no options" in message
    for key in ("seed", "permutations"):
        with pytest.raises(ValueError, match="permutation test"):
            get_measure(name, **{key: 1})


@pytest.mark.parametrize("name", sorted(MEASURES))
def test_defaults_are_the_schema_defaults_and_the_listing_shows_the_schema(name: str) -> None:
    m = get_measure(name)
    listed = {row["name"]: row for row in list_measures()}[name]
    props = listed["options"]["properties"]
    assert listed["options"]["additionalProperties"] is False
    assert set(props) == set(type(m).Options.model_fields)
    for key, schema in props.items():
        assert getattr(m.options, key) == schema["default"], key


@pytest.mark.parametrize(
    ("name", "options", "field"),
    [
        ("mmd", {"kernel_num": 1e6}, "kernel_num"),
        ("mmd", {"kernel_num": 0}, "kernel_num"),
        ("mmd", {"kernel_mul": 1e308}, "kernel_mul"),
        ("mmd", {"kernel_mul": 1.0}, "kernel_mul"),
        ("mmd", {"block_size": "a"}, "block_size"),
        ("mmd", {"block_size": 8193}, "block_size"),
        ("mmd", {"sigma": 0.0}, "sigma"),
        ("mmd", {"sigma": math.inf}, "sigma"),
        ("mmd", {"sigma": [1.0] * 17}, "sigma"),
        ("mmd", {"estimator": "quadratic"}, "estimator"),
        ("seed_mmd", {"kernel_num": 17}, "kernel_num"),
        ("seed_mmd", {"fix_sigma": -1.0}, "fix_sigma"),
        ("seed_mmd", {"fix_sigma": math.nan}, "fix_sigma"),
        ("mutual_information", {"bins": 1e6}, "bins"),
        ("mutual_information", {"bins": 1}, "bins"),
        ("grassmann", {"energy": 0.0}, "energy"),
        ("grassmann", {"energy": 1.5}, "energy"),
        ("grassmann", {"k": 0}, "k"),
        ("grassmann", {"metric": "angle"}, "metric"),
        ("mahalanobis", {"shrinkage": "plain"}, "shrinkage"),
    ],
)
def test_out_of_range_options_name_the_option_and_its_bounds(
    name: str, options: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValueError, match=f"invalid option.*{field}=") as err:
        get_measure(name, **options)
    assert "known options" in str(err.value)


def test_bounds_are_inclusive_where_documented() -> None:
    x, y = _pair()
    for options in (
        {"kernel": "multi", "kernel_num": 16, "kernel_mul": 16.0},
        {"block_size": 1},
        {"block_size": 8192},
        {"sigma": [0.5, 1.0, 2.0]},
    ):
        assert math.isfinite(get_measure("mmd", **options)(x, y))
    assert get_measure("mutual_information", bins=256)(x, y) >= 0
    assert get_measure("grassmann", energy=1.0)(x, y) >= 0


def test_wrappers_equal_the_configured_measures() -> None:
    x, y = _pair()
    assert mmd(x, y, kernel="multi", kernel_mul=3.0, kernel_num=3, estimator="unbiased") == (
        get_measure("mmd", kernel="multi", kernel_mul=3.0, kernel_num=3, estimator="unbiased")(x, y)
    )
    assert mmd(x, y, sigma=(0.5, 2.0)) == get_measure("mmd", sigma=[0.5, 2.0])(x, y)
    assert seed_mmd(x, y, fix_sigma=2.0) == get_measure("seed_mmd", fix_sigma=2.0)(x, y)
    assert grassmann(x, y, k=2, metric="chordal") == get_measure(
        "grassmann", k=2, metric="chordal"
    )(x, y)


def test_a_configured_measure_keeps_its_options_and_takes_none_per_call() -> None:
    m = get_measure("mmd", estimator="linear", sigma=1.0)
    assert m.options.estimator == "linear" and m.options.sigma == 1.0
    assert "linear" in repr(m)
    x, y = _pair()
    with pytest.raises(TypeError):
        m(x, y, sigma=2.0)  # type: ignore[call-arg]
    assert isinstance(get_measure("euclidean").options, NoOptions)
