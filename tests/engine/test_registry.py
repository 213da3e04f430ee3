"""The shared registry: duplicates refused, misses list the known names."""

from __future__ import annotations

import pytest

from app.engine.registry import Registry


def test_duplicates_are_refused_and_misses_list_names() -> None:
    table: Registry[int] = Registry("widget")
    assert table.add("a", 1) == 1
    table.add("b", 2)
    with pytest.raises(ValueError, match="widget 'a' is already registered"):
        table.add("a", 3)
    assert table["a"] == 1 and table.lookup("b") == 2
    with pytest.raises(KeyError, match="unknown widget 'c'; use one of a, b"):
        table.lookup("c")
