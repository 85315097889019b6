"""Anytime-valid statistics: reference values (computed another way), and their error rates
under continuous monitoring checked by seeded simulation with tolerances that can fail."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from qatcmp.stats.sequential import (
    Look,
    analyse_pair,
    confidence_sequence_path,
    log_evalue_path,
    mixture_evalue,
    mixture_log_evalue,
    more_questions_estimate,
)


def _exact_mixture(b: int, c: int) -> Fraction:
    """2^n · b! c! / (n+1)! with exact integers."""
    n = b + c
    return Fraction(2**n * math.factorial(b) * math.factorial(c), math.factorial(n + 1))


def test_reference_values_from_the_notes():
    # docs/sequential.md: b=9, c=1 gives E ≈ 9.3; b=8, c=0 gives 28.4.
    assert mixture_evalue(9, 1) == pytest.approx(9.309, abs=1e-3)
    assert mixture_evalue(8, 0) == pytest.approx(28.44, abs=1e-2)
    assert mixture_evalue(0, 0) == 1.0


@pytest.mark.parametrize("b,c", [(0, 1), (3, 3), (10, 2), (40, 17), (120, 80), (0, 30)])
def test_log_space_matches_exact_factorials(b, c):
    assert mixture_log_evalue(b, c) == pytest.approx(math.log(_exact_mixture(b, c)), rel=1e-12, abs=1e-12)
    assert mixture_log_evalue(b, c) == pytest.approx(mixture_log_evalue(c, b))  # two-sided


def test_huge_counts_do_not_overflow():
    value = mixture_log_evalue(6000, 4000)
    assert math.isfinite(value) and value > 100


def test_path_is_the_mixture_on_discordant_questions_only():
    rng = np.random.default_rng(3)
    d = rng.choice([-1, 0, 0, 0, 1, 1], size=200).astype(float)
    path = log_evalue_path(d, alpha=0.05)
    for t in (1, 17, 60, 200):
        head = d[:t]
        expected = mixture_log_evalue(int(np.sum(head > 0)), int(np.sum(head < 0)))
        assert path[t - 1] == pytest.approx(expected, abs=1e-9)


def test_decision_at_the_bonferroni_threshold():
    # 1 B-only, 9 A-only, then 20 concordant: E peaks at 9.3 < 20, undecided at alpha=0.05
    # with one pair; with alpha=0.2 (threshold 5) it is different. (9 A-only first would
    # pass 51 on the way: the running maximum counts.)
    d = [-1.0] + [1.0] * 9 + [0.0] * 20
    assert analyse_pair([1.0] * 9 + [-1.0], [10], alpha=0.05, family_size=1, margin=None).decision == "different"
    assert analyse_pair(d, [30], alpha=0.05, family_size=1, margin=None).decision == "undecided"
    assert analyse_pair(d, [30], alpha=0.2, family_size=1, margin=None).decision == "different"
    # Three pairs: threshold 3/0.2 = 15 > 9.3.
    assert analyse_pair(d, [30], alpha=0.2, family_size=3, margin=None).decision == "undecided"
    # b=8, c=0: 28.4 >= 20.
    out = analyse_pair([1.0] * 8 + [0.0] * 12, [10, 20], alpha=0.05, family_size=1, margin=None)
    assert out.decision == "different" and out.decided_at == 10 and len(out.looks) == 1
    assert out.looks[0].p_anytime == pytest.approx(9 / 256)


def test_equivalence_needs_the_interval_inside_the_margin():
    rng = np.random.default_rng(11)
    d = rng.choice([-1.0, 0.0, 1.0], p=[0.05, 0.9, 0.05], size=3000)
    out = analyse_pair(d, list(range(250, 3001, 250)), alpha=0.05, family_size=1, margin=0.05)
    assert out.decision == "equivalent"
    last = out.looks[-1]
    assert -0.05 < last.interval[0] < last.interval[1] < 0.05
    # The looks before did not fit (or it would have stopped there).
    for look in out.looks[:-1]:
        assert not (-0.05 < look.interval[0] and look.interval[1] < 0.05)
    # No margin: never "equivalent".
    assert analyse_pair(d, [3000], alpha=0.05, family_size=1, margin=None).decision == "undecided"


def test_interval_is_running_intersection_and_contains_the_estimate():
    rng = np.random.default_rng(5)
    d = rng.choice([-1.0, 0.0, 1.0], p=[0.1, 0.7, 0.2], size=800)
    lower, upper = confidence_sequence_path(d, alpha=0.05)
    assert np.all(np.diff(lower) >= -1e-12) and np.all(np.diff(upper) <= 1e-12)
    means = np.cumsum(d) / np.arange(1, d.size + 1)
    assert np.all(lower[50:] <= means[50:] + 1e-9) and np.all(means[50:] <= upper[50:] + 1e-9)
    # Wider than the fixed-n 95% Wald interval at the end: the price of looking anytime.
    wald = 1.96 * d.std(ddof=1) / math.sqrt(d.size)
    assert (upper[-1] - lower[-1]) / 2 > wald


def test_type_one_error_under_continuous_monitoring():
    """Equal accuracy, looked at after every question up to 500: the mixture e-value
    rejects at most alpha of the time (the notes: 0.031), whereas re-testing a fixed McNemar
    would reject ~0.37."""
    rng = np.random.default_rng(20261201)
    reps, n, alpha = 2000, 500, 0.05
    rejections = 0
    for _ in range(reps):
        d = rng.choice([-1.0, 0.0, 0.0, 0.0, 1.0], size=n)
        rejections += bool(np.max(log_evalue_path(d, alpha)) >= math.log(1 / alpha))
    rate = rejections / reps
    se = math.sqrt(alpha * (1 - alpha) / reps)
    assert rate <= alpha + 2 * se
    assert rate > 0.01  # not trivially conservative: a broken e-value of 1 would fail here


def test_interval_covers_the_true_difference_at_every_look_with_samples():
    """K = 4 answers per question: d_i are per-question mean differences. The level-alpha
    sequence misses the true mean at some time in at most alpha of the runs."""
    rng = np.random.default_rng(7)
    reps, n, alpha, k = 400, 300, 0.1, 4
    misses = 0
    for _ in range(reps):
        p_a = rng.beta(2, 1, size=n)  # per-question pass rates
        p_b = np.clip(p_a - 0.05, 0, 1)
        d = rng.binomial(k, p_a) / k - rng.binomial(k, p_b) / k
        true = float(np.mean(p_a - p_b))  # the questions' own mean difference
        lower, upper = confidence_sequence_path(d, alpha=alpha, grid=1001)
        misses += bool(np.any((lower > true) | (upper < true)))
    rate = misses / reps
    assert rate <= alpha + 2 * math.sqrt(alpha * (1 - alpha) / reps)


def test_betting_evalue_with_samples_rejects_a_real_difference():
    rng = np.random.default_rng(9)
    k, n = 3, 400
    p_a = rng.uniform(0.3, 1.0, size=n)
    d = rng.binomial(k, p_a) / k - rng.binomial(k, np.clip(p_a - 0.25, 0, 1)) / k
    out = analyse_pair(d, list(range(50, n + 1, 50)), alpha=0.05, family_size=3, margin=None)
    assert out.decision == "different"
    assert out.looks[-1].max_e_value >= 60


def test_more_questions_estimate_is_consistent_with_the_e_value():
    # delta 0.08 at discordance 0.10 after 50 questions: expected counts at N questions
    # reach E >= 20 at some N; the estimate must land on the first such N.
    look = Look(questions=50, diff=0.04, a_only=3, b_only=1, e_value=1.0, max_e_value=1.0, interval=(-0.3, 0.3))
    more = more_questions_estimate(look, alpha=0.05, family_size=1, margin=None, binary=True)
    assert more is not None and more > 0
    total = 50 + more
    psi, delta = 0.08, 0.04
    at = lambda t: mixture_log_evalue(t * (psi + delta) / 2, t * (psi - delta) / 2)  # noqa: E731
    assert at(total) >= math.log(20) > at(total - 1)
    # No difference and no margin: nothing in sight.
    flat = Look(questions=50, diff=0.0, a_only=2, b_only=2, e_value=1.0, max_e_value=1.0, interval=(-0.2, 0.2))
    assert more_questions_estimate(flat, alpha=0.05, family_size=1, margin=None, binary=True) is None
    assert more_questions_estimate(flat, alpha=0.05, family_size=1, margin=0.05, binary=True) > 0


def test_bad_input_is_refused():
    with pytest.raises(ValueError):
        mixture_log_evalue(-1, 2)
    with pytest.raises(ValueError):
        analyse_pair([2.0], [1], alpha=0.05, family_size=1, margin=None)
    with pytest.raises(ValueError):
        analyse_pair([1.0], [2], alpha=0.05, family_size=1, margin=None)


@pytest.mark.parametrize("b,c", [(9, 1), (8, 0), (30, 12), (5, 5)])
def test_mixture_is_the_average_likelihood_ratio_over_a_uniform_p(b, c):
    """E_n = ∫_0^1 (2p)^b (2(1 − p))^c dp, by a midpoint sum over 200,000 values of p (no
    factorials, no Beta function)."""
    p = (np.arange(200_000) + 0.5) / 200_000
    integral = float(np.mean(np.exp(b * np.log(2 * p) + c * np.log(2 * (1 - p)))))
    assert mixture_evalue(b, c) == pytest.approx(integral, rel=1e-6)


def test_paths_do_not_look_ahead_and_the_decision_is_nested():
    """The e-value after n questions depends on those n only (predictable), and a decision at
    look n is the same whether or not later questions exist."""
    rng = np.random.default_rng(12)
    d = rng.choice([-1.0, 0.0, 1.0], p=[0.08, 0.8, 0.12], size=600)
    full = log_evalue_path(d, alpha=0.05)
    looks = list(range(20, 601, 20))
    whole = analyse_pair(d, looks, alpha=0.05, family_size=2, margin=0.05)
    for n in (1, 33, 250, 600):
        assert np.allclose(log_evalue_path(d[:n], alpha=0.05), full[:n])
    if whole.decided_at is not None:
        head = analyse_pair(d[: whole.decided_at], [n for n in looks if n <= whole.decided_at],
                            alpha=0.05, family_size=2, margin=0.05)
        assert (head.decision, head.decided_at) == (whole.decision, whole.decided_at)
    maxima = [look.max_e_value for look in whole.looks]
    assert all(b >= a for a, b in zip(maxima, maxima[1:]))
