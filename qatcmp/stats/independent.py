"""Tests that treat two models as independent samples.

Every qatcmp variant answers the same questions, so these tests throw the pairing away and
are conservative (or simply wrong about the question asked). They are here only to reproduce
tables published that way, always next to the paired result.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import chi2_contingency, fisher_exact, norm
from statsmodels.stats.proportion import proportions_ztest


@dataclass(frozen=True)
class IndependentTests:
    z_test_p: float
    chi2_p: float
    chi2_yates_p: float
    fisher_p: float


def _table(correct_a: int, n_a: int, correct_b: int, n_b: int) -> np.ndarray:
    for correct, n in ((correct_a, n_a), (correct_b, n_b)):
        if n <= 0 or not 0 <= correct <= n:
            raise ValueError(f"invalid count {correct}/{n}")
    return np.array([[correct_a, n_a - correct_a], [correct_b, n_b - correct_b]])


def _degenerate(table: np.ndarray) -> bool:
    # All right or all wrong in both groups: no test statistic exists, and the data carry
    # no evidence of a difference.
    return bool((table.sum(axis=0) == 0).any())


def z_test_p(correct_a: int, n_a: int, correct_b: int, n_b: int) -> float:
    """Two-proportion z-test with pooled variance (equals chi-squared without Yates)."""
    table = _table(correct_a, n_a, correct_b, n_b)
    if _degenerate(table):
        return 1.0
    _, p = proportions_ztest([correct_a, correct_b], [n_a, n_b])
    return float(p)


def chi2_p(correct_a: int, n_a: int, correct_b: int, n_b: int, *, yates: bool = False) -> float:
    table = _table(correct_a, n_a, correct_b, n_b)
    if _degenerate(table):
        return 1.0
    return float(chi2_contingency(table, correction=yates)[1])


def fisher_p(correct_a: int, n_a: int, correct_b: int, n_b: int) -> float:
    table = _table(correct_a, n_a, correct_b, n_b)
    return float(fisher_exact(table).pvalue)


def independent_tests(correct_a: int, n_a: int, correct_b: int, n_b: int) -> IndependentTests:
    return IndependentTests(
        z_test_p=z_test_p(correct_a, n_a, correct_b, n_b),
        chi2_p=chi2_p(correct_a, n_a, correct_b, n_b),
        chi2_yates_p=chi2_p(correct_a, n_a, correct_b, n_b, yates=True),
        fisher_p=fisher_p(correct_a, n_a, correct_b, n_b),
    )


def mean_rates_z_test_p(rates_a: Sequence[float], rates_b: Sequence[float]) -> float:
    """Two-sample z-test of the mean per-question pass rate (K answers per question): the
    question is the unit, so N questions per model, not N×K independent answers. Still
    ignores the pairing."""
    if not rates_a or not rates_b:
        raise ValueError("need per-question pass rates for both models")
    mean_a, mean_b = float(np.mean(rates_a)), float(np.mean(rates_b))
    var_a = float(np.var(rates_a, ddof=1)) if len(rates_a) > 1 else 0.0
    var_b = float(np.var(rates_b, ddof=1)) if len(rates_b) > 1 else 0.0
    se = math.sqrt(var_a / len(rates_a) + var_b / len(rates_b))
    if se == 0:
        return 1.0 if mean_a == mean_b else 0.0
    return float(2 * norm.sf(abs(mean_a - mean_b) / se))
