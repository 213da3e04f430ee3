"""One colour per label, the same in every view: box editor, heat map, scatter, legends.

Colours go by a label's rank among the store's labels (sorted), so two labels never share a
colour while there are at most :data:`PALETTE_SIZE` of them, and every view that asks with
the same label set gets the same answer. The server is the only place that decides:
``GET /api/labels`` carries each label's colour to the page, and the figures get theirs from
:func:`label_colours` over the same labels. Past :data:`PALETTE_SIZE` labels the hues repeat,
darker, then lighter, so neighbours in rank still differ.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["PALETTE", "PALETTE_SIZE", "UNKNOWN", "colour_at", "label_colours"]

PALETTE: tuple[str, ...] = (
    # Tableau's first four, then picked greedily (farthest in RGB from those already taken)
    # from Tableau 10, Kelly's 22 colours of maximum contrast and Trubetskoy's 20 distinct
    # colours, leaving out the pale ones that vanish on white: every pair is at least 60
    # apart in RGB.
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#f032e6",
    "#a1caf1",
    "#000075",
    "#c2b280",
    "#875692",
    "#8db600",
    "#654522",
    "#42d4f4",
    "#dcd300",
    "#800000",
    "#e377c2",
    "#911eb4",
    "#008856",
    "#f99379",
    "#469990",
    "#9a6324",
    "#b3446c",
    "#17becf",
)
PALETTE_SIZE = len(PALETTE)
# A box whose label has no colour (none given; static/palette.js's UNKNOWN on the page).
UNKNOWN = "#7f7f7f"


def _mix(colour: str, towards: int, amount: float) -> str:
    channels = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
    mixed = (round(c + (towards - c) * amount) for c in channels)
    return "#" + "".join(f"{c:02x}" for c in mixed)


def colour_at(rank: int) -> str:
    """The colour of the label of this rank (0-based) among the sorted labels.

    Raises:
        ValueError: a negative rank.
    """
    if rank < 0:
        raise ValueError(f"a label's rank is 0 or more, got {rank}")
    base = PALETTE[rank % PALETTE_SIZE]
    round_ = rank // PALETTE_SIZE
    if round_ == 0:
        return base
    # Odd rounds darker, even rounds lighter, each a little further from the base.
    amount = min(0.25 * ((round_ + 1) // 2), 0.75)
    return _mix(base, 0 if round_ % 2 else 255, amount)


def label_colours(labels: Iterable[str]) -> dict[str, str]:
    """Each distinct label's colour: its rank among the sorted distinct labels picks it.

    Args:
        labels: every label of the store (or of the view, when it stands alone); repeats
            are fine.

    Returns:
        ``{label: "#rrggbb"}`` in sorted label order.
    """
    return {label: colour_at(rank) for rank, label in enumerate(sorted(set(labels)))}
