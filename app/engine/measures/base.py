"""The measure pipeline and registry: options checked once, inputs checked per call."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar

import torch
from pydantic import BaseModel, ConfigDict, ValidationError
from torch import Tensor

from app.engine.regions import Descriptor
from app.engine.registry import Registry

if TYPE_CHECKING:  # the inference package imports the measures: a type only, no cycle
    from app.engine.inference.bootstrap import IntervalMethod

__all__ = [
    "MEASURES",
    "Between",
    "Descriptor",
    "IntervalScale",
    "Measure",
    "NoOptions",
    "MeasureOptions",
    "Resampler",
    "as_samples",
    "describe_options",
    "get_measure",
    "list_measures",
    "parse_options",
    "register",
]

Between = Literal["means", "sets"]

Resampler = Callable[[Tensor, Tensor], float]
"""A measure on resampled rows: ``f(i, j)`` is its value on ``x[i]`` and ``y[j]`` for
row-index vectors ``i`` and ``j`` (:meth:`Measure.resampler`)."""

MEASURES: Registry[type[Measure]] = Registry("measure")

_M = TypeVar("_M", bound="type[Measure]")
_O = TypeVar("_O", bound=BaseModel)
# Keys people put into a measure's options that belong to the permutation test instead.
_TEST_KEYS = frozenset({"seed", "permutations"})


class MeasureOptions(BaseModel):
    """Base of every measure's options: unknown keys are refused, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class NoOptions(MeasureOptions):
    """The options of a measure that takes none."""


def register(cls: _M) -> _M:
    """Class decorator that adds a measure to :data:`MEASURES` under ``cls.name``.

    Raises:
        ValueError: if another measure already uses the name.
    """
    MEASURES.add(cls.name, cls)
    return cls


def get_measure(name: str, **options: Any) -> Measure:
    """The registered measure ``name``, configured with ``options``.

    Raises:
        KeyError: for an unknown name; the message lists the known ones.
        ValueError: unknown or out-of-range options; the message lists the known ones.
    """
    return MEASURES.lookup(name)(**options)


def list_measures() -> list[dict[str, Any]]:
    """Name, direction, descriptor, comparison and options schema of every measure, by name."""
    return [
        {
            "name": cls.name,
            "higher_is_better": cls.higher_is_better,
            "needs": cls.needs,
            "between": cls.between,
            "options": cls.Options.model_json_schema(),
        }
        for _, cls in sorted(MEASURES.items())
    ]


def _describe_schema(s: Mapping[str, Any]) -> str:
    if "anyOf" in s:
        return " or ".join(_describe_schema(part) for part in s["anyOf"])
    if "enum" in s:
        return "|".join(repr(v) for v in s["enum"])
    if "const" in s:
        return repr(s["const"])
    kind = {
        "integer": "int",
        "number": "number",
        "boolean": "bool",
        "null": "None",
        "string": "str",
    }.get(s.get("type", ""), s.get("type", "any"))
    if kind == "array":
        items = _describe_schema(s.get("items", {}))
        size = f", {s.get('minItems', 0)}..{s['maxItems']} items" if "maxItems" in s else ""
        return f"list of ({items}{size})"
    bounds = [
        f"{op} {s[key]}"
        for key, op in (
            ("minimum", "≥"),
            ("exclusiveMinimum", ">"),
            ("maximum", "≤"),
            ("exclusiveMaximum", "<"),
        )
        if key in s
    ]
    return f"{kind} {' and '.join(bounds)}" if bounds else kind


def describe_options(model: type[BaseModel]) -> str:
    """A one-line list of ``model``'s options with their types, bounds and defaults."""
    props: dict[str, Any] = model.model_json_schema().get("properties", {})
    if not props:
        return "it takes no options"
    parts = [
        f"{name} ({_describe_schema(s)}, default {s.get('default')!r})" for name, s in props.items()
    ]
    return "known options: " + "; ".join(parts)


def parse_options(owner: str, model: type[_O], options: Mapping[str, Any]) -> _O:
    """Validate ``options`` against ``model`` (a pydantic model with ``extra="forbid"``).

    Args:
        owner: what takes the options, for messages (e.g. ``"measure 'mmd'"``).
        model: the options model.
        options: keyword → value.

    Returns:
        The validated options.

    Raises:
        ValueError: unknown keys or values of the wrong type or out of bounds; the message
            lists every known option with its type, bounds and default.
    """
    unknown = [k for k in options if k not in model.model_fields]
    if unknown:
        hint = ""
        if _TEST_KEYS & set(unknown):
            hint = (
                " (seed and permutations configure the permutation test, not the measure: "
                "give them beside the options, not inside)"
            )
        raise ValueError(
            f"unknown option(s) {', '.join(map(repr, unknown))} for {owner}{hint}; "
            f"{describe_options(model)}"
        )
    try:
        return model.model_validate(dict(options))
    except ValidationError as err:
        problems: dict[str, list[str]] = {}
        for e in err.errors():
            field = str(e["loc"][0]) if e["loc"] else "options"
            if e["msg"] not in problems.setdefault(field, []):
                problems[field].append(e["msg"])
        said = "; ".join(
            f"{field}={options.get(field)!r:.60}: {' / '.join(msgs)}"
            for field, msgs in problems.items()
        )
        raise ValueError(
            f"invalid option(s) for {owner}: {said}; {describe_options(model)}"
        ) from None


class IntervalScale(ABC):
    """The scale a measure's bootstrap interval is built on when its own value is a poor
    pivot (:attr:`Measure.interval_scale`).

    Each unit (a box, or an image's boxes in the group) is summarised as one row, the
    bootstrap resamples those rows, :meth:`statistic` is the estimate on the scale and
    :meth:`plug_in` the centre of its studentized pivot, and :meth:`back` maps the
    interval's ends to the measure's scale (monotone, so the coverage is kept).
    """

    note: ClassVar[str]
    """What the interval is for, said when the value shown lies outside it."""

    @abstractmethod
    def summarise(
        self, x: Tensor, y: Tensor, x_units: Sequence[Tensor], y_units: Sequence[Tensor]
    ) -> tuple[Tensor, Tensor]:
        """One row per unit of ``x`` and of ``y`` (``*_units``: each unit's row indices)."""

    @abstractmethod
    def statistic(self, a: Tensor, b: Tensor) -> float:
        """The estimate on this scale from units' summaries ``a`` and ``b``.

        Raises:
            ValueError: a side with fewer than 2 units.
        """

    @abstractmethod
    def plug_in(self, a: Tensor, b: Tensor) -> float:
        """The quantity with the units taken as their population, ``θ(F̂)``."""

    @abstractmethod
    def back(self, value: float) -> float:
        """An end of the interval on the measure's own scale (NaN stays NaN)."""


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

    Options are given once, to the constructor, and checked against the class's
    :attr:`Options` model (types, bounds, defaults; the schema ``GET /api/measures`` shows).
    Subclasses set the class attributes and override :meth:`compute`; ``__call__`` runs the
    pipeline: check both inputs (2-D, finite, same ``d``, at least ``min_rows`` rows each),
    bring them to one dtype, compute, check that the result is a finite number.

    Args:
        **options: the measure's options (see its :attr:`Options`).

    Raises:
        ValueError: unknown options or values of the wrong type or out of bounds.
    """

    name: ClassVar[str]
    higher_is_better: ClassVar[bool] = False
    needs: ClassVar[Descriptor] = "gap"
    between: ClassVar[Between] = "means"
    min_rows: ClassVar[int] = 1
    interval_method: ClassVar[IntervalMethod] = "studentized"
    """The bootstrap interval a matrix of this measure gives unless another is asked for:
    the studentized one held 95% in every setting of benchmarks/calibration.py with a gap
    (BCa 77–91%), on the measure's :attr:`interval_scale` where it names one (on ‖x̄−ȳ‖
    itself in 256 dimensions it covered 49%); a measure whose statistic it does not suit
    overrides this."""
    interval_scale: ClassVar[IntervalScale | None] = None
    """Where the measure's interval is built on another scale (``None``: its own value)."""
    interval_refusal: ClassVar[str | None] = None
    """Why this measure gives no bootstrap interval: its intervals were measured and did
    not hold their level (``None``: it gives one)."""
    Options: ClassVar[type[MeasureOptions]] = NoOptions
    options: MeasureOptions

    def __init__(self, **options: Any) -> None:
        self.options = parse_options(f"measure {self.name!r}", self.Options, options)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.options!r})"

    def __call__(self, x: Tensor, y: Tensor) -> float:
        """The measure between ``x`` and ``y``."""
        x, y = self._checked(x, y)
        return self._finite(float(self.compute(x, y)))

    def _checked(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        x = as_samples(x, "x", min_rows=self.min_rows)
        y = as_samples(y, "y", min_rows=self.min_rows)
        if x.shape[1] != y.shape[1]:
            raise ValueError(
                f"x and y have different feature sizes ({x.shape[1]} vs {y.shape[1]}); "
                "take both from the same layer and descriptor"
            )
        dtype = torch.promote_types(x.dtype, y.dtype)
        return x.to(dtype), y.to(dtype)

    def _finite(self, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError(f"{self.name} gave a non-finite value for these inputs")
        return value

    @abstractmethod
    def compute(self, x: Tensor, y: Tensor) -> Tensor | float:
        """The value for checked inputs of one dtype."""

    def resampler(self, x: Tensor, y: Tensor) -> Resampler:
        """The measure on resamples of these rows: ``f(i, j) = self(x[i], y[j])`` for
        row-index vectors ``i`` and ``j`` (what a bootstrap evaluates thousands of times).

        A measure that can reuse work done once on all of ``x`` and ``y`` overrides
        :meth:`resampled` (MMD: the pooled rows' squared distances); the others are called
        on every resample.

        Raises:
            ValueError: bad samples (as the measure itself), at once; a resample the measure
                refuses, or a non-finite value, when ``f`` is called.
        """
        x, y = self._checked(x, y)
        fast = self.resampled(x, y)
        if fast is None:
            return lambda i, j: self(x[i], y[j])
        return lambda i, j: self._finite(fast(i, j))

    def resampled(self, x: Tensor, y: Tensor) -> Resampler | None:
        """A faster :meth:`resampler` for checked inputs of one dtype, equal to the measure
        on every resample up to rounding (``None``: call the measure)."""
        return None

    def plug_in(self, x: Tensor, y: Tensor) -> float:
        """The measure with the samples taken as their populations, ``θ(F̂)``: what a
        studentized bootstrap centres its pivot on
        (:func:`app.engine.inference.bootstrap.bootstrap_interval`). The measure itself for
        a plug-in estimate; an estimator that is not one (a U-statistic) overrides this."""
        return self(x, y)

    def pairwise(self, z: Tensor, labels: Sequence[str] | None = None) -> Tensor:
        """The measure between every pair of rows of ``z`` (``n×n``, float64).

        Each row is one sample on its own; measures that need statistics of the rows
        (``std_euclidean``, ``mahalanobis``) override this and take them from all of ``z``
        (``labels`` names each row's group where a measure needs groups). The diagonal is 0
        for distances and each row's value with itself for similarities.

        Raises:
            ValueError: bad samples, or what the measure raises for a pair.
        """
        z = as_samples(z, "z")
        return self.pairwise_sets(list(z.unsqueeze(1)))

    def pairwise_sets(self, sets: Sequence[Tensor]) -> Tensor:
        """The measure between every pair of sets (``len(sets)²``, float64).

        The upper triangle is computed and mirrored (every measure here is symmetric except
        the linear-time MMD, whose mirror is the ``(i, j)`` value). The diagonal is 0 for
        distances (a set is at distance 0 from itself) and the set's value with itself for
        similarities.

        Raises:
            ValueError: what the measure raises for a pair.
        """
        n = len(sets)
        out = torch.zeros(n, n, dtype=torch.float64)
        for i in range(n):
            if self.higher_is_better:
                out[i, i] = self(sets[i], sets[i])
            for j in range(i + 1, n):
                out[i, j] = out[j, i] = self(sets[i], sets[j])
        return out
