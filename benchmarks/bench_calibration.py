"""Rejection rates of the unit-level tests under nulls and one alternative (500 splits)."""

from __future__ import annotations

from benchmarks.calibration import main as _calibration


def main() -> None:
    """Print the calibration table of :mod:`benchmarks.calibration` at 500 repetitions."""
    _calibration(500)
