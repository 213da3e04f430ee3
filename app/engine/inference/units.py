"""Which rows move together in a test between two groups: boxes or whole images.

Rows of one box (its ``pixels``) and boxes of one image are not independent, so a test
exchanges whole *units* between the groups, never single rows. A :class:`Design` says, for
every row of the two sides ``x`` and ``y``, which box and which image it came from;
:func:`choose_unit` picks the unit and :func:`scheme` turns the choice into the
permutation scheme: strata of elements, each stratum with how many of its elements go to
``x``.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from app.engine.measures.base import as_samples

__all__ = ["Design", "Scheme", "Stratum", "Unit", "choose_unit", "scheme", "unit_for_sides"]

Unit = Literal["box", "image"]


@dataclass(frozen=True)
class Design:
    """Box and image of every row of the two sides (``x`` rows first, then ``y``).

    Rows of one box are that box's ``pixels`` samples; with ``gap`` each box is one row.
    A box id must not appear on both sides (a test needs disjoint groups).

    Attributes:
        x_boxes: box id of each row of ``x``.
        x_images: image id of each row of ``x``.
        y_boxes: box id of each row of ``y``.
        y_images: image id of each row of ``y``.
    """

    x_boxes: tuple[Hashable, ...]
    x_images: tuple[Hashable, ...]
    y_boxes: tuple[Hashable, ...]
    y_images: tuple[Hashable, ...]

    def __post_init__(self) -> None:
        if len(self.x_boxes) != len(self.x_images) or len(self.y_boxes) != len(self.y_images):
            raise ValueError("a Design needs one box id and one image id per row of each side")
        if not self.x_boxes or not self.y_boxes:
            raise ValueError("a Design needs at least one row on each side")
        shared = set(self.x_boxes) & set(self.y_boxes)
        if shared:
            raise ValueError(
                f"box(es) {sorted(map(str, shared))[:5]} are in both groups; a test between "
                "groups needs each box in one group only"
            )
        for boxes, images in ((self.x_boxes, self.x_images), (self.y_boxes, self.y_images)):
            seen: dict[Hashable, Hashable] = {}
            for b, i in zip(boxes, images, strict=True):
                if seen.setdefault(b, i) != i:
                    raise ValueError(f"box {b!r} is given two images ({seen[b]!r} and {i!r})")

    @classmethod
    def from_boxes(
        cls,
        x: Sequence[tuple[Hashable, Hashable, int]],
        y: Sequence[tuple[Hashable, Hashable, int]],
    ) -> Design:
        """A design from ``(box id, image id, rows)`` per box of each side, in row order.

        Example: ``Design.from_boxes([(1, "a", 16), (2, "a", 16)], [(3, "b", 16)])`` for
        ``pixels`` at grid 4 (16 rows per box).
        """

        def rows(
            side: Sequence[tuple[Hashable, Hashable, int]],
        ) -> tuple[tuple[Hashable, ...], tuple[Hashable, ...]]:
            if any(r < 1 for _, _, r in side):
                raise ValueError("every box needs at least one row")
            boxes = tuple(b for b, _, r in side for _ in range(r))
            images = tuple(i for _, i, r in side for _ in range(r))
            return boxes, images

        xb, xi = rows(x)
        yb, yi = rows(y)
        return cls(xb, xi, yb, yi)

    @classmethod
    def independent(cls, n: int, m: int) -> Design:
        """``n`` and ``m`` rows that are each their own box on their own image."""
        return cls(
            tuple(range(n)),
            tuple(range(n)),
            tuple(range(n, n + m)),
            tuple(range(n, n + m)),
        )

    @property
    def n_rows(self) -> tuple[int, int]:
        """Rows of ``x`` and of ``y``."""
        return len(self.x_boxes), len(self.y_boxes)

    def samples(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """``x`` and ``y`` as sample matrices, checked to have the rows this design describes.

        Raises:
            ValueError: not samples (see :func:`~app.engine.measures.base.as_samples`), or
                row counts other than :attr:`n_rows`.
        """
        x, y = as_samples(x, "x"), as_samples(y, "y")
        if (x.shape[0], y.shape[0]) != self.n_rows:
            raise ValueError(
                f"the design describes {self.n_rows} rows but x and y have "
                f"{(x.shape[0], y.shape[0])}; give one box and image id per row"
            )
        return x, y


def unit_for_sides(
    sides: Sequence[tuple[Sequence[Hashable], Sequence[Hashable]]], unit: Unit | None = None
) -> Unit:
    """The unit for groups given as ``(box ids, image ids)`` per row of each group:
    ``"image"`` whenever some image has boxes in two groups or two boxes in one group (its
    boxes are then not independent), else ``"box"``; ``unit`` forces a choice.

    Raises:
        ValueError: an unknown ``unit``.
    """
    if unit is not None:
        if unit not in ("box", "image"):
            raise ValueError(f"unknown unit {unit!r}; use 'box', 'image' or None (automatic)")
        return unit
    members: dict[Hashable, set[tuple[int, Hashable]]] = {}
    for side, (boxes, images) in enumerate(sides):
        for box, image in zip(boxes, images, strict=True):
            members.setdefault(image, set()).add((side, box))
    return "image" if any(len(m) > 1 for m in members.values()) else "box"


def choose_unit(design: Design, unit: Unit | None = None) -> Unit:
    """The unit a test of ``design`` exchanges (see :func:`unit_for_sides`).

    Raises:
        ValueError: an unknown ``unit``.
    """
    return unit_for_sides(
        [(design.x_boxes, design.x_images), (design.y_boxes, design.y_images)], unit
    )


@dataclass(frozen=True)
class Stratum:
    """Elements that exchange group labels among themselves.

    Attributes:
        elements: indices into :attr:`Scheme.element_sides` of the stratum's elements.
        k: how many of them go to ``x`` in every assignment.
        image: the shared image this stratum stands for, or ``None`` for the free units.
    """

    elements: tuple[int, ...]
    k: int
    image: Hashable | None


@dataclass(frozen=True)
class Scheme:
    """A permutation scheme over the pooled rows ``z = cat(x, y)``.

    Attributes:
        unit: the unit that was chosen.
        row_element: for every pooled row, the index of the element (a set of rows that
            always moves together) it belongs to.
        element_sides: ``True`` for the elements observed in ``x``.
        strata: the strata; an assignment picks ``k`` elements of each for ``x``.
        n_units: units of ``x`` and of ``y`` (an image shared by both sides counts once
            on each side).
    """

    unit: Unit
    row_element: Tensor
    element_sides: tuple[bool, ...]
    strata: tuple[Stratum, ...]
    n_units: tuple[int, int]

    @property
    def observed(self) -> Tensor:
        """The observed assignment as a 0/1 element indicator (1 = in ``x``)."""
        return torch.tensor(self.element_sides, dtype=torch.bool)

    def rows_of(self, elements: Tensor) -> Tensor:
        """Row indicators (``batch × rows``) from element indicators (``batch × elements``)."""
        return elements[:, self.row_element]


def scheme(design: Design, unit: Unit | None = None) -> Scheme:
    """The permutation scheme of ``design`` under ``unit`` (chosen by :func:`choose_unit`
    when ``None``).

    Units that sit wholly in one group are the free elements: one stratum in which their
    group labels are shuffled, keeping each group's number of units (their rows may
    differ). With ``unit="box"`` every box is such a unit. With ``unit="image"`` a unit is
    an image's boxes within one group; an image that has boxes in *both* groups cannot move
    whole, so its boxes form a stratum of their own and exchange labels only among
    themselves, keeping how many of them each group has. This restricted (blocked)
    permutation is valid under the null hypothesis that the group labels are exchangeable
    within images, and it never separates rows of one box or boxes of one free image.
    """
    chosen = choose_unit(design, unit)
    xs = [(b, i, True) for b, i in zip(design.x_boxes, design.x_images, strict=True)]
    ys = [(b, i, False) for b, i in zip(design.y_boxes, design.y_images, strict=True)]
    rows = xs + ys
    shared = set(design.x_images) & set(design.y_images) if chosen == "image" else set()
    keys: dict[Hashable, int] = {}
    sides: list[bool] = []
    row_element: list[int] = []
    stratum_of: list[Hashable | None] = []
    for box, image, in_x in rows:
        if chosen == "box" or image in shared:
            key: Hashable = ("box", box)
        else:
            key = ("image", image, in_x)
        if key not in keys:
            keys[key] = len(sides)
            sides.append(in_x)
            stratum_of.append(image if image in shared else None)
        row_element.append(keys[key])
    strata: list[Stratum] = []
    for tag in [None, *dict.fromkeys(s for s in stratum_of if s is not None)]:
        members = tuple(e for e, s in enumerate(stratum_of) if s == tag)
        if members:
            strata.append(Stratum(members, sum(sides[e] for e in members), tag))
    if chosen == "box":
        n_units = (len(set(design.x_boxes)), len(set(design.y_boxes)))
    else:
        n_units = (len(set(design.x_images)), len(set(design.y_images)))
    return Scheme(
        unit=chosen,
        row_element=torch.tensor(row_element, dtype=torch.long),
        element_sides=tuple(sides),
        strata=tuple(strata),
        n_units=n_units,
    )
