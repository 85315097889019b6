"""The futility stop (`--futility β` with `--plan-gap G`) as pure statistics: the capital
against "the gap is G or more" is written out here independently with exact rationals; a true
gap of G or more (either sign, one or several answers per question) ends in "below-plan" with
probability at most β even when looked at after every question; with no difference it does
stop; and it cannot be asked for without a plan."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from qatcmp.stats.proportions import wilson_interval
from qatcmp.stats.sequential import analyse_pair, futility_log_capital_paths, futility_log_level_path

BETA = 0.2
SEEDS = {"gap at the plan": 1, "gap past the plan": 2, "negative gap": 3, "three answers per question": 4}


def exact_capitals(d: list[Fraction], gap: Fraction) -> tuple[list[Fraction], list[Fraction]]:
    """F⁺ = Π(1 − κ(d − G)), F⁻ = Π(1 + κ(d + G)), κ_i = min(G / (m2 + G²), (9/10)/(1 − G)),
    m2 = (Σ_{s<i} d_s² + 1)/(i + 1)."""
    up, down, squares, ups, downs = Fraction(1), Fraction(1), Fraction(0), [], []
    for i, x in enumerate(d, start=1):
        m2 = (squares + 1) / (i + 1)
        bet = min(gap / (m2 + gap * gap), Fraction(9, 10) / (1 - gap))
        up, down = up * (1 - bet * (x - gap)), down * (1 + bet * (x + gap))
        squares += x * x
        ups.append(up)
        downs.append(down)
    return ups, downs


@pytest.mark.parametrize("values", [(-1, 0, 1), (-1, Fraction(-1, 3), 0, Fraction(1, 3), 1)])
def test_capitals_match_an_exact_recomputation(values):
    rng = np.random.default_rng(7)
    d = [values[k] for k in rng.integers(0, len(values), size=120)]
    d = [Fraction(x) for x in d]
    gap = Fraction(1, 20)
    up, down = futility_log_capital_paths([float(x) for x in d], float(gap))
    exact_up, exact_down = exact_capitals(d, gap)
    assert np.allclose(up, [math.log(x) for x in exact_up], rtol=1e-9, atol=1e-9)
    assert np.allclose(down, [math.log(x) for x in exact_down], rtol=1e-9, atol=1e-9)
    level = futility_log_level_path([float(x) for x in d], float(gap))
    best_up, best_down, expected = Fraction(1, 10**9), Fraction(1, 10**9), []
    for u, w in zip(exact_up, exact_down):
        best_up, best_down = max(best_up, u), max(best_down, w)
        expected.append(math.log(min(best_up, best_down)))
    assert np.allclose(level, expected, rtol=1e-9, atol=1e-9)


def _binary(rng, psi, gap, n):
    a_only, b_only = (psi + gap) / 2, (psi - gap) / 2
    return rng.choice([1.0, -1.0, 0.0], p=[a_only, b_only, 1 - psi], size=n)


def _means_of_three(rng, p_a, p_b, n):
    return (rng.binomial(3, p_a, size=n) - rng.binomial(3, p_b, size=n)) / 3.0


@pytest.mark.parametrize("case", ["gap at the plan", "gap past the plan", "negative gap", "three answers per question"])
def test_a_real_gap_of_the_plan_rarely_ends_below_plan(case):
    """Monitored after every question to 1,500: the worst case for an anytime guarantee."""
    rng = np.random.default_rng(SEEDS[case])
    plan, reps, n, stops = 0.04, 1500, 1500, 0
    for _ in range(reps):
        if case == "gap at the plan":
            d = _binary(rng, 0.20, 0.04, n)
        elif case == "gap past the plan":
            d = _binary(rng, 0.20, 0.06, n)
        elif case == "negative gap":
            d = _binary(rng, 0.20, -0.04, n)
        else:
            d = _means_of_three(rng, 0.60, 0.56, n)
        stops += futility_log_level_path(d, plan).max() >= math.log(1 / BETA)
    low, _ = wilson_interval(stops, reps)
    assert low < BETA, f"{stops}/{reps} ended below-plan at a true gap of the plan or more"


def test_no_difference_ends_below_plan():
    rng = np.random.default_rng(3)
    reps, stops = 300, 0
    for _ in range(reps):
        d = _binary(rng, 0.20, 0.0, 2000)
        stops += futility_log_level_path(d, 0.04).max() >= math.log(1 / BETA)
    assert stops / reps > 0.9


def test_analyse_pair_decides_below_plan_at_the_first_look_past_the_level():
    rng = np.random.default_rng(11)
    d = _binary(rng, 0.20, 0.0, 2000)
    looks = list(range(25, 2001, 25))
    out = analyse_pair(d, looks, alpha=0.05, family_size=1, margin=None, plan_gap=0.04, futility=BETA)
    level = futility_log_level_path(d, 0.04)
    first = next(n for n in looks if level[n - 1] >= math.log(1 / BETA))
    assert out.decision == "below-plan" and out.decided_at == first
    assert out.looks[-1].futility_capital == pytest.approx(math.exp(level[first - 1]))
    assert all(look.futility_capital < 1 / BETA for look in out.looks[:-1])
    # Without --futility the same data stays undecided (no margin): the stop is the option's.
    plain = analyse_pair(d, looks, alpha=0.05, family_size=1, margin=None, plan_gap=0.04)
    assert plain.decision == "undecided" and plain.looks[-1].futility_capital is None


def test_a_futility_stop_needs_a_plan():
    with pytest.raises(ValueError, match="planned gap"):
        analyse_pair([1.0, -1.0], [2], alpha=0.05, family_size=1, margin=None, futility=0.2)
    with pytest.raises(ValueError, match="between 0 and 1"):
        analyse_pair([1.0, -1.0], [2], alpha=0.05, family_size=1, margin=None, plan_gap=0.04, futility=1.5)
