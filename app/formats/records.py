"""The plain records the codecs read and write (no store, no FastAPI)."""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["LabeledBox", "finite_number"]


@dataclass(frozen=True)
class LabeledBox:
    """A box ``x, y, w, h`` in image pixels (origin top-left) with its label."""

    x: float
    y: float
    w: float
    h: float
    label: str

    def as_tuple(self) -> tuple[float, float, float, float, str]:
        """``(x, y, w, h, label)``, the form the store's ``add_boxes`` takes."""
        return self.x, self.y, self.w, self.h, self.label


def finite_number(value: object, what: str) -> float:
    """``value`` as a finite float.

    Args:
        value: a JSON number (``int`` or ``float``; ``bool`` is refused).
        what: how the message names the value.

    Raises:
        ValueError: not a number, or not finite once a float (NaN, infinity, or an integer
            with hundreds of digits).
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{what} must be a number, got {type(value).__name__}")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise ValueError(f"{what} must be a finite number, got {str(value)[:40]}")
    return number
