"""The shared registry: duplicates refused, misses list the known names."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

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


def test_register_names_classes_and_refuses_duplicates_untouched() -> None:
    table: Registry[object] = Registry("gadget")

    @table.register("first")
    class First:
        name: str

    def second() -> int:
        return 2

    assert table.register("second")(second) is second and table["second"] is second
    assert table["first"] is First and First.name == "first"

    class Again:
        pass

    with pytest.raises(ValueError, match="gadget 'first' is already registered"):
        table.register("first")(Again)
    assert (
        not hasattr(Again, "name")
        and table["first"] is First
        and list(table) == ["first", "second"]
    )


def test_import_family_registers_every_module_first_ones_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "family_pkg"
    package.mkdir()
    (package / "__init__.py").write_text(
        "from app.engine.registry import Registry, import_family\n"
        "THINGS = Registry('thing')\n"
        "import_family(__name__, __path__, first=['zeta'])\n"
    )
    for name in ("zeta", "alpha", "mid"):
        (package / f"{name}.py").write_text(
            f"from family_pkg import THINGS\nTHINGS.add({name!r}, {len(name)})\n"
        )
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        module = importlib.import_module("family_pkg")
        assert list(module.THINGS.items()) == [("zeta", 4), ("alpha", 5), ("mid", 3)]
    finally:
        for name in [n for n in sys.modules if n.startswith("family_pkg")]:
            del sys.modules[name]
