"""Named registries that refuse duplicate names and list the valid names on a miss.

Measures, heat-map methods, localisation scores and built-in models register through one of
these with the :meth:`Registry.register` decorator (torchvision's ``register_model`` style),
so tests can parametrize over them. :func:`import_family` imports every module of a
package, so a new measure or heat-map method is one new file: no list of modules to edit.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

__all__ = ["Registry", "import_family"]

T = TypeVar("T")


class Registry(dict[str, T]):
    """A ``dict`` of name → entry with checked insertion and helpful look-ups.

    Args:
        kind: what an entry is, for messages ("measure", "heat-map method", …).
    """

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def add(self, name: str, entry: T) -> T:
        """Register ``entry`` under ``name``.

        Raises:
            ValueError: ``name`` is already registered.
        """
        if name in self:
            raise ValueError(f"{self.kind} {name!r} is already registered; pick another name")
        self[name] = entry
        return entry

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: register the decorated class (or function) under ``name``.

        A registered class also gets ``name`` as its ``name`` attribute, so an entry knows
        the name it is listed under without writing it twice.

        Raises:
            ValueError: ``name`` is already registered (before the class is touched).
        """

        def add(entry: T) -> T:
            self.add(name, entry)
            if isinstance(entry, type):
                setattr(entry, "name", name)  # noqa: B010  (any class, not one base's attribute)
            return entry

        return add

    def lookup(self, name: str) -> T:
        """The entry under ``name``.

        Raises:
            KeyError: an unknown name; the message lists the known ones.
        """
        if name not in self:
            raise KeyError(f"unknown {self.kind} {name!r}; use one of {', '.join(self)}")
        return self[name]


def import_family(package: str, path: Iterable[str], first: Sequence[str] = ()) -> None:
    """Import every module of ``package`` (``first`` ones first, then by name), so each
    registers its entries; the registration order is the order users see them in.

    Args:
        package: the package's dotted name (its ``__name__``).
        path: the package's ``__path__``.
        first: module names to import before the others.
    """
    names = sorted(info.name for info in pkgutil.iter_modules(path))
    for name in [*first, *(n for n in names if n not in first)]:
        importlib.import_module(f"{package}.{name}")
