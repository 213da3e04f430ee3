"""Tests between two groups that respect which rows are independent.

Rows of one box (its ``pixels``) and boxes of one image are not independent samples, so
every procedure here works on *units*: :mod:`units` says which rows move together,
:mod:`exact` enumerates or draws assignments of units to groups, :mod:`permutation` runs
the test (with an MMD fast path), :mod:`bootstrap` gives intervals (studentized, BCa or
percentile) by resampling units, :mod:`effective` reports effective sample sizes and :mod:`adjust`
corrects p-values across a family. Measure-agnostic: a statistic is any
``f(x, y) -> float``. Cancellation raises ``InterruptedError("cancelled")``.
"""

from app.engine.inference.adjust import Adjustment, adjust
from app.engine.inference.bootstrap import (
    INNER_RESAMPLES,
    INTERVAL_METHODS,
    Interval,
    IntervalMethod,
    bca_levels,
    bootstrap_interval,
    evaluations,
    jackknife,
)
from app.engine.inference.effective import Effective, effective_of, effective_sizes, icc
from app.engine.inference.exact import assignment_batches, count_assignments, smallest_p
from app.engine.inference.matrix import Group, MatrixTests, PairTest, matrix_tests
from app.engine.inference.permutation import Statistic, TestResult, permutation_test
from app.engine.inference.units import Design, Scheme, Stratum, Unit, choose_unit, scheme

__all__ = [
    "INNER_RESAMPLES",
    "INTERVAL_METHODS",
    "Adjustment",
    "Design",
    "Effective",
    "Group",
    "MatrixTests",
    "PairTest",
    "Interval",
    "IntervalMethod",
    "Scheme",
    "Statistic",
    "Stratum",
    "TestResult",
    "Unit",
    "adjust",
    "assignment_batches",
    "bca_levels",
    "bootstrap_interval",
    "choose_unit",
    "count_assignments",
    "effective_of",
    "effective_sizes",
    "evaluations",
    "matrix_tests",
    "icc",
    "jackknife",
    "permutation_test",
    "scheme",
    "smallest_p",
]
