"""Two models on the same questions: the paired 2x2 table and what it says.

Only the discordant questions (one model right, the other wrong) carry information about a
difference; questions both got right or both got wrong cancel out.

Notation: ``a_only`` = A right & B wrong (b in the textbooks), ``b_only`` = A wrong & B right
(c). ``diff`` is accuracy(A) - accuracy(B) = (a_only - b_only) / n.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from scipy.optimize import brentq
from scipy.stats import binom
from statsmodels.stats.contingency_tables import mcnemar

from qatcmp.stats.proportions import z_value


@dataclass(frozen=True)
class PairedTable:
    both: int  # both right
    a_only: int
    b_only: int
    neither: int  # both wrong

    def __post_init__(self) -> None:
        if min(self.both, self.a_only, self.b_only, self.neither) < 0:
            raise ValueError("counts cannot be negative")

    @property
    def n(self) -> int:
        return self.both + self.a_only + self.b_only + self.neither

    @property
    def discordant(self) -> int:
        return self.a_only + self.b_only

    @property
    def diff(self) -> float:
        return (self.a_only - self.b_only) / self.n

    @property
    def flips(self) -> float:
        """Share of questions whose outcome changed between the two models (ψ)."""
        return self.discordant / self.n

    @property
    def agreement(self) -> float:
        return 1.0 - self.flips

    def swapped(self) -> PairedTable:
        return PairedTable(self.both, self.b_only, self.a_only, self.neither)


def paired_table(a: Sequence[bool], b: Sequence[bool]) -> PairedTable:
    """The 2x2 table of two models' outcomes on the same questions, in the same order."""
    if len(a) != len(b):
        raise ValueError("the two outcome lists must cover the same questions")
    counts = {(True, True): 0, (True, False): 0, (False, True): 0, (False, False): 0}
    for right_a, right_b in zip(a, b):
        counts[(bool(right_a), bool(right_b))] += 1
    return PairedTable(
        both=counts[(True, True)],
        a_only=counts[(True, False)],
        b_only=counts[(False, True)],
        neither=counts[(False, False)],
    )


def mcnemar_exact_p(a_only: int, b_only: int) -> float:
    """Exact (binomial) McNemar test: under no difference each discordant question favours
    A with probability 1/2."""
    result = mcnemar([[0, a_only], [b_only, 0]], exact=True)
    return min(1.0, float(result.pvalue))


def mcnemar_midp_p(a_only: int, b_only: int) -> float:
    """Mid-p McNemar (Fagerland et al. 2013): the exact test counts the observed outcome
    fully in the tail and is conservative for small counts; mid-p counts it half."""
    discordant = a_only + b_only
    k = min(a_only, b_only)
    p = 2 * (binom.cdf(k, discordant, 0.5) - 0.5 * binom.pmf(k, discordant, 0.5))
    return float(min(1.0, max(0.0, p)))


def _tango_score(delta: float, a_only: int, b_only: int, n: int) -> float:
    """Tango's (1998) score statistic for H0: diff = delta.

    The variance uses the maximum-likelihood estimate of P(A wrong & B right) under the
    constraint diff = delta: the root of 2n·q² + [-(a+b) + (2n - a + b)·delta]·q
    - b·delta·(1 - delta) = 0, with a = a_only, b = b_only."""
    quad_a = 2 * n
    quad_b = -(a_only + b_only) + (2 * n - a_only + b_only) * delta
    quad_c = -b_only * delta * (1 - delta)
    q_b_only = (math.sqrt(max(0.0, quad_b**2 - 4 * quad_a * quad_c)) - quad_b) / (2 * quad_a)
    # Var = P(a_only) + P(b_only) - delta², never negative in theory; rounding can dip below.
    variance = max(2 * q_b_only + delta * (1 - delta), 1e-300)
    return (a_only - b_only - n * delta) / math.sqrt(n * variance)


def tango_interval(table: PairedTable, confidence: float = 0.95) -> tuple[float, float]:
    """Tango's score interval for the paired difference in accuracy.

    It keeps close to nominal coverage with few discordant pairs, where the Wald interval
    fails, and stays inside [-1, 1]."""
    n = table.n
    if n == 0:
        raise ValueError("no questions answered by both models")
    z = z_value(confidence)
    edge = 1e-12
    score = lambda delta: _tango_score(delta, table.a_only, table.b_only, n)  # noqa: E731
    # The score falls as delta rises; a bound with no root is the end of the range.
    if score(-1 + edge) <= z:
        low = -1.0
    else:
        low = brentq(lambda d: score(d) - z, -1 + edge, table.diff, xtol=1e-12)
    if score(1 - edge) >= -z:
        high = 1.0
    else:
        high = brentq(lambda d: score(d) + z, table.diff, 1 - edge, xtol=1e-12)
    return float(low), float(high)


@dataclass(frozen=True)
class Equivalence:
    """TOST: two one-sided tests at level alpha are equivalent to the (1 - 2·alpha) interval
    lying inside (-margin, +margin)."""

    margin: float
    interval: tuple[float, float]
    equivalent: bool


def equivalence_tost(table: PairedTable, margin: float, alpha: float = 0.05) -> Equivalence:
    if margin <= 0:
        raise ValueError("the equivalence margin must be positive")
    interval = tango_interval(table, confidence=1 - 2 * alpha)
    inside = -margin < interval[0] and interval[1] < margin
    return Equivalence(margin=margin, interval=interval, equivalent=inside)


def phi_correlation(table: PairedTable) -> float | None:
    """Correlation of the two models' 0/1 outcomes; None when one model is constant."""
    right_a = table.both + table.a_only
    right_b = table.both + table.b_only
    n = table.n
    denominator = right_a * (n - right_a) * right_b * (n - right_b)
    if denominator == 0:
        return None
    return (table.both * table.neither - table.a_only * table.b_only) / math.sqrt(denominator)


@dataclass(frozen=True)
class ClusteredDifference:
    questions: int
    diff: float
    se: float
    ci: tuple[float, float]


def clustered_paired_difference(
    rates_a: Sequence[float], rates_b: Sequence[float], confidence: float = 0.95
) -> ClusteredDifference:
    """With K answers per question: the mean of per-question pass-rate differences, with a
    normal interval from their spread (the question is the unit, as for one model)."""
    if len(rates_a) != len(rates_b):
        raise ValueError("the two pass-rate lists must cover the same questions")
    differences = [float(x) - float(y) for x, y in zip(rates_a, rates_b)]
    count = len(differences)
    if count < 2:
        raise ValueError("a clustered difference needs at least two questions")
    mean = sum(differences) / count
    variance = sum((d - mean) ** 2 for d in differences) / (count - 1)
    se = math.sqrt(variance / count)
    half = z_value(confidence) * se
    return ClusteredDifference(count, mean, se, (max(-1.0, mean - half), min(1.0, mean + half)))
