"""The planned bet (`qatcmp run --until-decided --plan-gap G`): its e-value recomputed by hand
question by question, its predictability (no look-ahead), symmetry, and its error rate under
continuous monitoring checked by seeded simulation with bounds that can fail."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from qatcmp.stats.sequential import (
    Look,
    analyse_pair,
    log_evalue_path,
    more_questions_estimate,
    planned_bets,
)


def _beta11_mixture(b: int, c: int) -> Fraction:
    n = b + c
    return Fraction(2**n * math.factorial(b) * math.factorial(c), math.factorial(n + 1))


def _by_hand(d: list[int], gap: Fraction) -> list[Fraction]:
    """E_t = 1/4 · Beta(1,1) mixture + 3/4 · (W+ + W-)/2, with the bet for question i computed
    from questions before i: min(G / ((discordant before i + 1) / (i + 1)), 9/10), in exact
    rationals."""
    out, up, down, b, c, discordant = [], Fraction(1), Fraction(1), 0, 0, 0
    for i, x in enumerate(d, start=1):
        bet = min(gap / Fraction(discordant + 1, i + 1), Fraction(9, 10))
        up *= 1 + bet * x
        down *= 1 - bet * x
        b, c, discordant = b + (x > 0), c + (x < 0), discordant + (x != 0)
        out.append(Fraction(1, 4) * _beta11_mixture(b, c) + Fraction(3, 4) * (up + down) / 2)
    return out


@pytest.mark.parametrize("gap", [Fraction(1, 25), Fraction(2, 25), Fraction(3, 10)])
def test_planned_evalue_equals_an_exact_computation(gap):
    rng = np.random.default_rng(int(gap * 100))
    d = [int(x) for x in rng.choice([-1, 0, 0, 0, 1, 1], size=120)]
    path = log_evalue_path(np.array(d, dtype=float), alpha=0.05, plan_gap=float(gap))
    expected = _by_hand(d, gap)
    for t in (1, 2, 10, 57, 120):
        assert path[t - 1] == pytest.approx(math.log(expected[t - 1]), abs=1e-9)


def test_the_bet_uses_only_earlier_questions():
    rng = np.random.default_rng(1)
    d = rng.choice([-1.0, 0.0, 1.0], p=[0.1, 0.7, 0.2], size=300)
    full = log_evalue_path(d, alpha=0.05, plan_gap=0.04)
    bets = planned_bets(d, 0.04)
    for n in (1, 7, 150, 299):
        # The e-value after n questions does not depend on what comes after.
        assert np.allclose(log_evalue_path(d[:n], alpha=0.05, plan_gap=0.04), full[:n])
        assert np.allclose(planned_bets(d[:n], 0.04), bets[:n])
    changed = d.copy()
    changed[150:] = -changed[150:]
    assert np.allclose(planned_bets(changed, 0.04)[:151], bets[:151])
    assert np.all((bets > 0) & (bets <= 0.9))


def test_two_sided_and_constant_on_concordant_questions():
    rng = np.random.default_rng(2)
    d = rng.choice([-1.0, 0.0, 1.0], p=[0.15, 0.6, 0.25], size=400)
    path = log_evalue_path(d, alpha=0.05, plan_gap=0.05)
    assert np.allclose(path, log_evalue_path(-d, alpha=0.05, plan_gap=0.05))
    concordant = np.flatnonzero(d == 0)
    concordant = concordant[concordant > 0]
    assert np.allclose(path[concordant], path[concordant - 1])


def test_the_plan_decides_sooner_near_the_planned_gap():
    """Discordance 0.2, true gap 4 points: with the plan 0.04 the e-value reaches 20 sooner than
    the uniform mixture in most runs (same data)."""
    rng = np.random.default_rng(3)
    sooner = later = 0
    for _ in range(60):
        d = rng.choice([1.0, -1.0, 0.0], p=[0.12, 0.08, 0.8], size=2000)
        first = []
        for plan in (None, 0.04):
            hit = np.flatnonzero(log_evalue_path(d, alpha=0.05, plan_gap=plan) >= math.log(20))
            first.append(hit[0] if hit.size else d.size)
        sooner += first[1] < first[0]
        later += first[1] > first[0]
    assert sooner > 2 * later


@pytest.mark.parametrize("plan", [0.02, 0.08, 0.3])
def test_type_one_error_under_continuous_monitoring(plan):
    """Equal accuracy, looked at after every question up to 600: the planned e-value crosses
    1/alpha in at most alpha of the runs (Ville), up to Monte-Carlo error."""
    rng = np.random.default_rng(int(plan * 1000))
    reps, n, alpha = 1500, 600, 0.05
    d = rng.choice([-1.0, 0.0, 0.0, 0.0, 1.0], size=(reps, n))
    rejections = sum(bool(np.max(log_evalue_path(row, alpha, plan_gap=plan)) >= math.log(1 / alpha)) for row in d)
    rate = rejections / reps
    assert rate <= alpha + 2 * math.sqrt(alpha * (1 - alpha) / reps)
    assert rate > 0.005  # not trivially conservative: an e-value stuck at 1 would fail here


def test_type_one_error_with_samples():
    """K = 3 answers per question, equal per-question pass rates: d_i symmetric around 0."""
    rng = np.random.default_rng(8)
    reps, n, alpha, k = 600, 300, 0.1, 3
    rejections = 0
    for _ in range(reps):
        p = rng.uniform(0.2, 0.9, size=n)
        d = rng.binomial(k, p) / k - rng.binomial(k, p) / k
        rejections += bool(np.max(log_evalue_path(d, alpha, plan_gap=0.05)) >= math.log(1 / alpha))
    assert rejections / reps <= alpha + 2 * math.sqrt(alpha * (1 - alpha) / reps)


def test_analyse_pair_with_a_plan_and_its_estimate():
    rng = np.random.default_rng(4)
    d = rng.choice([1.0, -1.0, 0.0], p=[0.14, 0.06, 0.8], size=1000)
    looks = list(range(10, 1001, 10))
    out = analyse_pair(d, looks, alpha=0.05, family_size=1, margin=None, plan_gap=0.08)
    assert out.decision == "different"
    path = log_evalue_path(d, alpha=0.05, plan_gap=0.08)
    first = next(n for n in looks if np.max(path[:n]) >= math.log(20))
    assert out.decided_at == first
    assert out.looks[-1].max_e_value == pytest.approx(math.exp(np.max(path[:first])))
    # The estimate projects the planned bet at the look's discordance: recomputed by hand.
    look = Look(questions=100, diff=0.04, a_only=6, b_only=2, e_value=1.0, max_e_value=1.0, interval=(-0.3, 0.3))
    more = more_questions_estimate(look, alpha=0.05, family_size=1, margin=None, binary=True, plan_gap=0.04)
    psi, delta, bet = 0.08, 0.04, 0.5  # bet = min(G / psi, 0.9)

    def log_e(t):
        a, b = t * (psi + delta) / 2, t * (psi - delta) / 2
        mix = math.lgamma(a + 1) + math.lgamma(b + 1) - math.lgamma(a + b + 2) + (a + b) * math.log(2)
        tuned = (math.exp(a * math.log(1 + bet) + b * math.log(1 - bet))
                 + math.exp(b * math.log(1 + bet) + a * math.log(1 - bet))) / 2
        return math.log(0.25 * math.exp(mix) + 0.75 * tuned)

    total = 100 + more
    assert log_e(total) >= math.log(20) > log_e(total - 1)
    uniform = more_questions_estimate(look, alpha=0.05, family_size=1, margin=None, binary=True)
    assert more < uniform  # at the planned gap the plan needs fewer


def test_a_bad_plan_is_refused():
    with pytest.raises(ValueError):
        log_evalue_path([1.0, 0.0], alpha=0.05, plan_gap=0.0)
    with pytest.raises(ValueError):
        analyse_pair([1.0], [1], alpha=0.05, family_size=1, margin=None, plan_gap=1.5)
