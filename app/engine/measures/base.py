"""The measure pipeline and registry: check inputs, compute, check the result."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any, ClassVar, Literal, TypeVar

import torch
from torch import Tensor

from app.engine.registry import Registry

__all__ = [
    "MEASURES",
    "Between",
    "Descriptor",
    "Measure",
    "as_samples",
    "get_measure",
    "list_measures",
    "register",
]

Descriptor = Literal["gap", "grid", "pixels"]
Between = Literal["means", "sets"]

MEASURES: Registry[type[Measure]] = Registry("measure")

_M = TypeVar("_M", bound="type[Measure]")


def register(cls: _M) -> _M:
    """Class decorator that adds a measure to :data:`MEASURES` under ``cls.name``.

    Raises:
        ValueError: if another measure already uses the name.
    """
    MEASURES.add(cls.name, cls)
    return cls


def get_measure(name: str) -> Measure:
    """An instance of the registered measure ``name``.

    Raises:
        KeyError: for an unknown name; the message lists the known ones.
    """
    return MEASURES.lookup(name)()


def list_measures() -> list[dict[str, Any]]:
    """Name, direction, descriptor and comparison of every registered measure, by name."""
    return [
        {
            "name": cls.name,
            "higher_is_better": cls.higher_is_better,
            "needs": cls.needs,
            "between": cls.between,
        }
        for _, cls in sorted(MEASURES.items())
    ]


def as_samples(t: Tensor, what: str, *, min_rows: int = 1) -> Tensor:
    """Check one side's samples: a floating ``n×d`` tensor (a 1-D tensor is one row).

    Integer input becomes float64; floating input keeps its dtype.

    Raises:
        ValueError: for other shapes, non-finite values or fewer than ``min_rows`` rows.
    """
    if not isinstance(t, Tensor):
        raise ValueError(f"{what} must be a torch.Tensor of samples (rows), got {type(t).__name__}")
    if t.ndim == 1:
        t = t.unsqueeze(0)
    if t.ndim != 2:
        raise ValueError(
            f"{what} must be 2-D (samples × features), got shape {tuple(t.shape)}; "
            "flatten each sample first"
        )
    if not t.is_floating_point():
        t = t.to(torch.float64)
    if t.shape[1] == 0:
        raise ValueError(f"{what} has no features (shape {tuple(t.shape)})")
    if t.shape[0] < min_rows:
        raise ValueError(f"{what} has {t.shape[0]} sample(s); this needs at least {min_rows}")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{what} contains NaN or Inf; drop or fix those samples first")
    return t


class Measure(ABC):
    """A measure between two groups of samples (rows are samples: ``n×d`` and ``m×d``).

    Subclasses set the class attributes and override :meth:`compute`; ``__call__`` runs the
    pipeline: check both inputs (2-D, finite, same ``d``, at least ``min_rows`` rows each),
    bring them to one dtype, compute, check that the result is a finite number.
    """

    name: ClassVar[str]
    higher_is_better: ClassVar[bool] = False
    needs: ClassVar[Descriptor] = "gap"
    between: ClassVar[Between] = "means"
    min_rows: ClassVar[int] = 1

    def __call__(self, x: Tensor, y: Tensor, **options: Any) -> float:
        """The measure between ``x`` and ``y``; ``options`` are the measure's own keywords."""
        x = as_samples(x, "x", min_rows=self.min_rows)
        y = as_samples(y, "y", min_rows=self.min_rows)
        if x.shape[1] != y.shape[1]:
            raise ValueError(
                f"x and y have different feature sizes ({x.shape[1]} vs {y.shape[1]}); "
                "take both from the same layer and descriptor"
            )
        dtype = torch.promote_types(x.dtype, y.dtype)
        value = float(self.compute(x.to(dtype), y.to(dtype), **options))
        if not math.isfinite(value):
            raise ValueError(f"{self.name} gave a non-finite value for these inputs")
        return value

    @abstractmethod
    def compute(self, x: Tensor, y: Tensor, **options: Any) -> Tensor | float:
        """The value for checked inputs of one dtype."""
