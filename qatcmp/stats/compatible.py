"""Intervals that agree with the tests a verdict rests on, and equivalence tests with a p-value
(so that several pairs can be Holm-adjusted like the difference tests).

A sentence that says "not distinguishable" next to an interval that excludes 0 contradicts
itself. That happens when the interval is at 95% and the verdict comes from a test after a
multiplicity adjustment. Here each interval is computed at the level its test was in effect
judged at:

- Multiplicity: with Holm-adjusted p-value p~ for raw p, a test rejects exactly when
  p < alpha·p/p~ (alpha/(m - rank + 1) in the usual step-down case). The interval at that
  level is "compatible" with Holm's decision: a shift that Holm rejects lies outside it. It
  is not a simultaneous coverage statement.
- Equivalence (TOST): two one-sided Tango score tests at -margin and +margin; the TOST p-value
  is the larger of the two, and the Tango interval at confidence 1 - 2·level lies inside
  ±margin exactly when that p-value is below the level. Holm on the TOST p-values adjusts
  equivalence for the number of pairs like the difference tests.
- Difference: the verdict uses the McNemar mid-p test, the interval is Tango's score
  interval (whose own test at 0 is the asymptotic McNemar test). The two agree except in a
  narrow band near the boundary; a caller checks and says so when they do not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy.stats import norm

from qatcmp.stats.paired import PairedTable, _tango_score, tango_interval


def compatible_level(alpha: float, p: float, p_adjusted: float) -> float:
    """The per-test level at which a test with raw p-value p rejects exactly when its
    adjusted p-value is below alpha."""
    if p_adjusted <= 0 or p <= 0:
        return alpha
    return min(alpha, alpha * p / p_adjusted)


@dataclass(frozen=True)
class Tost:
    margin: float
    p: float  # the larger of the two one-sided p-values
    p_lower: float  # H0: diff <= -margin
    p_upper: float  # H0: diff >= +margin


def tost_p(table: PairedTable, margin: float) -> Tost:
    """Two one-sided Tango score tests of the paired difference against ±margin."""
    if not 0 < margin < 1:
        raise ValueError("the equivalence margin must be between 0 and 1")
    if table.n == 0:
        raise ValueError("no questions answered by both models")
    score_low = _tango_score(-margin, table.a_only, table.b_only, table.n)
    score_high = _tango_score(margin, table.a_only, table.b_only, table.n)
    p_lower = float(norm.sf(score_low))
    p_upper = float(norm.cdf(score_high))
    return Tost(margin=margin, p=max(p_lower, p_upper), p_lower=p_lower, p_upper=p_upper)


def tost_interval(table: PairedTable, level: float) -> tuple[float, float]:
    """The Tango interval whose inclusion in ±margin is the TOST decision at this level:
    confidence 1 - 2·level (90% at level 0.05)."""
    if not 0 < level < 0.5:
        raise ValueError("the TOST level must be between 0 and 0.5")
    return tango_interval(table, confidence=1 - 2 * level)


def confidence_percent(level: float, *, two_sided: bool = True) -> str:
    """'95%' for level 0.05 (two-sided), '90%' for a TOST at 0.05; one decimal when needed."""
    confidence = 100 * (1 - level if two_sided else 1 - 2 * level)
    rounded = round(confidence, 1)
    if math.isclose(rounded, round(rounded)):
        return f"{round(rounded):.0f}%"
    return f"{rounded:.1f}%"
