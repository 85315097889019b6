"""Every statistic against independent reference values: the numbers in the shared
statistics notes (docs/statistics.md in the team notes, copied here as literals), exact
enumeration, and textbook formulas computed another way."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from scipy.optimize import minimize_scalar
from scipy.stats import norm

from qatcmp.stats import (
    PairedTable,
    clustered_accuracy,
    clustered_paired_difference,
    clustered_sample_size,
    variance_components,
    cochran_q,
    equivalence_tost,
    holm,
    independent_mde,
    independent_sample_size,
    independent_tests,
    mcnemar_exact_p,
    mcnemar_midp_p,
    paired_mde,
    paired_sample_size,
    paired_table,
    phi_correlation,
    tango_interval,
    wilson_interval,
)

# ----------------------------------------------------------------- the motivating table


def test_wilson_reference_intervals():
    assert wilson_interval(98, 100) == pytest.approx((0.930, 0.994), abs=5e-4)
    assert wilson_interval(90, 100) == pytest.approx((0.826, 0.945), abs=5e-4)
    assert wilson_interval(29, 50) == pytest.approx((0.442, 0.706), abs=5e-4)


def test_wilson_matches_closed_form():
    z = norm.ppf(0.975)
    for correct, n in [(0, 10), (3, 7), (50, 50), (29, 50)]:
        p = correct / n
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
        assert wilson_interval(correct, n) == pytest.approx((centre - half, centre + half), abs=1e-9)


def test_independent_tests_reference_humaneval():
    tests = independent_tests(98, 100, 90, 100)
    assert tests.z_test_p == pytest.approx(0.0172, abs=5e-5)
    assert tests.chi2_p == pytest.approx(tests.z_test_p, rel=1e-9)
    assert tests.chi2_yates_p == pytest.approx(0.0371, abs=5e-5)
    assert tests.fisher_p == pytest.approx(0.0330, abs=5e-5)


def test_independent_tests_reference_mmlu_pro():
    tests = independent_tests(29, 50, 26, 50)
    # The notes round 0.54649 to 0.547; allow that half-unit.
    assert tests.z_test_p == pytest.approx(0.547, abs=1e-3)
    assert tests.chi2_yates_p == pytest.approx(0.688, abs=5e-4)
    assert tests.fisher_p == pytest.approx(0.688, abs=5e-4)


def test_z_test_matches_pooled_formula():
    x1, n1, x2, n2 = 37, 60, 25, 55
    pooled = (x1 + x2) / (n1 + n2)
    z = (x1 / n1 - x2 / n2) / math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    assert independent_tests(x1, n1, x2, n2).z_test_p == pytest.approx(2 * norm.sf(abs(z)), rel=1e-9)


def test_independent_tests_all_correct_are_not_evidence():
    tests = independent_tests(20, 20, 20, 20)
    assert (tests.z_test_p, tests.chi2_p, tests.chi2_yates_p, tests.fisher_p) == (1, 1, 1, 1)


@pytest.mark.parametrize(
    ("a_only", "b_only", "exact", "midp"),
    [(9, 1, 0.0215, 0.0117), (10, 2, 0.0386, 0.0225)],
)
def test_mcnemar_reference_values(a_only, b_only, exact, midp):
    assert mcnemar_exact_p(a_only, b_only) == pytest.approx(exact, abs=5e-5)
    assert mcnemar_midp_p(a_only, b_only) == pytest.approx(midp, abs=5e-5)


def test_holm_reference_three_pairs():
    p = [mcnemar_exact_p(9, 1), mcnemar_exact_p(9, 1), mcnemar_exact_p(4, 4)]
    adjusted = holm(p)
    assert adjusted[0] == pytest.approx(0.0645, abs=5e-5)
    assert min(adjusted) > 0.05


def test_holm_matches_step_down_by_hand():
    p = [0.01, 0.04, 0.03, 0.005]
    order = sorted(range(len(p)), key=p.__getitem__)
    expected = [0.0] * len(p)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(p) - rank) * p[index]))
        expected[index] = running
    assert holm(p) == pytest.approx(expected)


# ----------------------------------------------------------------- exact enumeration


def _binomial_half(n: int, k: int) -> Fraction:
    return Fraction(math.comb(n, k), 2**n)


@pytest.mark.parametrize("a_only", range(0, 9))
@pytest.mark.parametrize("b_only", range(0, 9))
def test_mcnemar_by_enumeration(a_only, b_only):
    n = a_only + b_only
    k = min(a_only, b_only)
    # Two-sided: the outcomes at least as far from n/2 as the one observed.
    extreme = sum(
        (_binomial_half(n, x) for x in range(n + 1) if abs(x - n / 2) >= abs(k - n / 2)),
        Fraction(0),
    )
    tail = sum((_binomial_half(n, x) for x in range(k + 1)), Fraction(0))
    midp = 2 * (tail - _binomial_half(n, k) / 2)
    assert mcnemar_exact_p(a_only, b_only) == pytest.approx(min(1.0, float(extreme)), abs=1e-12)
    assert mcnemar_midp_p(a_only, b_only) == pytest.approx(min(1.0, float(midp)), abs=1e-12)


# ----------------------------------------------------------------- Tango


def test_tango_published_example():
    # The check value in the statistics notes: table (both right 12, A only 1, B only 7,
    # both wrong 1), n = 21; the same counts are the Bentur et al. example in Fagerland,
    # Lydersen & Laake's paired 2x2 chapter.
    low, high = tango_interval(PairedTable(both=12, a_only=1, b_only=7, neither=1))
    assert (low, high) == pytest.approx((-0.517, -0.026), abs=5e-4)


def _tango_score_by_likelihood(delta, table):
    """Score statistic with the constrained ML estimate found by maximising the multinomial
    likelihood numerically (no closed form), as an independent check of the quadratic."""
    n, x12, x21 = table.n, table.a_only, table.b_only
    x_rest = table.both + table.neither
    low = max(0.0, -delta)
    high = (1 - delta) / 2

    def negative_log_likelihood(q21):
        q12 = q21 + delta
        rest = 1 - q12 - q21
        total = 0.0
        for count, prob in ((x12, q12), (x21, q21), (x_rest, rest)):
            if count:
                total -= count * math.log(max(prob, 1e-300))
        return total

    q21 = minimize_scalar(
        negative_log_likelihood, bounds=(low, high), method="bounded", options={"xatol": 1e-12}
    ).x
    return (x12 - x21 - n * delta) / math.sqrt(n * (2 * q21 + delta - delta**2))


@pytest.mark.parametrize(
    "table",
    [PairedTable(30, 9, 1, 60), PairedTable(40, 3, 5, 2), PairedTable(80, 10, 2, 8)],
)
def test_tango_bounds_are_where_the_score_reaches_z(table):
    z = norm.ppf(0.975)
    low, high = tango_interval(table)
    assert _tango_score_by_likelihood(low, table) == pytest.approx(z, abs=1e-4)
    assert _tango_score_by_likelihood(high, table) == pytest.approx(-z, abs=1e-4)


def test_tango_all_discordant_one_way_reaches_the_edge():
    low, high = tango_interval(PairedTable(0, 10, 0, 0))
    assert high == 1.0 and 0 < low < 1


def test_tost_uses_the_90_percent_interval():
    table = PairedTable(both=450, a_only=10, b_only=12, neither=28)
    result = equivalence_tost(table, margin=0.05, alpha=0.05)
    assert result.interval == pytest.approx(tango_interval(table, confidence=0.90))
    assert result.equivalent
    assert not equivalence_tost(PairedTable(40, 5, 6, 9), margin=0.05).equivalent


def test_paired_table_and_phi():
    a = [True, True, False, False, True, False]
    b = [True, False, True, False, True, True]
    table = paired_table(a, b)
    assert (table.both, table.a_only, table.b_only, table.neither) == (2, 1, 2, 1)
    assert phi_correlation(table) == pytest.approx(np.corrcoef(a, b)[0, 1])
    assert phi_correlation(paired_table([True] * 3, [True, False, True])) is None


# ----------------------------------------------------------------- many models, clusters


def test_cochran_q_matches_formula():
    rng = np.random.default_rng(7)
    matrix = rng.random((40, 3)) < np.array([0.8, 0.6, 0.7])
    x = matrix.astype(int)
    k = x.shape[1]
    columns, rows = x.sum(axis=0), x.sum(axis=1)
    total = x.sum()
    q = (k - 1) * (k * (columns**2).sum() - total**2) / (k * total - (rows**2).sum())
    result = cochran_q(matrix.tolist())
    assert result.statistic == pytest.approx(q)
    assert result.df == 2
    assert result.p == pytest.approx(math.exp(-q / 2))  # chi-squared, 2 df


def test_cochran_q_identical_models():
    result = cochran_q([[True] * 3, [False] * 3, [True] * 3])
    assert (result.statistic, result.p) == (0.0, 1.0)


def test_clustered_accuracy_matches_numpy():
    rates = [1.0, 0.5, 0.0, 0.75, 1.0, 0.25]
    result = clustered_accuracy(rates)
    assert result.mean == pytest.approx(np.mean(rates))
    assert result.se == pytest.approx(np.std(rates, ddof=1) / math.sqrt(len(rates)))


# ----------------------------------------------------------------- power


@pytest.mark.parametrize(
    ("delta", "discordance", "expected"),
    [(0.08, 0.10, 121), (0.04, 0.10, 489), (0.08, 0.20, 243), (0.04, 0.20, 979)],
)
def test_paired_sample_size_reference(delta, discordance, expected):
    assert paired_sample_size(delta, discordance) == expected


def test_paired_mde_reference():
    assert paired_mde(100, 0.10) == pytest.approx(0.09, abs=0.005)
    assert paired_mde(50, 0.20) == pytest.approx(0.18, abs=0.01)
    # MDE and sample size are inverses of each other.
    delta = paired_mde(300, 0.15)
    assert paired_sample_size(delta, 0.15) == 300


def test_paired_mde_none_when_even_all_flips_one_way_is_not_enough():
    assert paired_mde(3, 0.10) is None


@pytest.mark.parametrize(("p", "expected"), [(0.9, 290), (0.55, 612)])
def test_independent_sample_size_reference(p, expected):
    assert independent_sample_size(p, 0.08) == expected


def test_independent_sample_size_matches_cohen_h_formula():
    p, q = 0.7, 0.62
    h = 2 * math.asin(math.sqrt(p)) - 2 * math.asin(math.sqrt(q))
    # Two groups: Var(h_hat) = 1/n + 1/n, so n per group = 2·((z_a/2 + z_b) / h)².
    n = 2 * ((norm.ppf(0.975) + norm.ppf(0.8)) / h) ** 2
    assert abs(independent_sample_size(p, 0.08) - math.ceil(n)) <= 1
    assert independent_mde(math.ceil(n), p) == pytest.approx(0.08, abs=0.001)


def test_paired_sample_size_rejects_impossible_discordance():
    with pytest.raises(ValueError):
        paired_sample_size(0.10, 0.05)


def test_clustered_paired_difference_matches_numpy():
    a = [1.0, 0.5, 0.75, 0.0, 1.0]
    b = [0.5, 0.5, 0.25, 0.25, 1.0]
    d = np.array(a) - np.array(b)
    result = clustered_paired_difference(a, b)
    assert result.diff == pytest.approx(d.mean())
    assert result.se == pytest.approx(d.std(ddof=1) / math.sqrt(len(d)))
    assert result.ci == pytest.approx((d.mean() - norm.ppf(0.975) * result.se, d.mean() + norm.ppf(0.975) * result.se))


# ----------------------------------------------------------------- samples per question


def test_variance_components_by_hand():
    # K = 2; pass rates per question for A and B.
    a, b = [1.0, 0.5, 0.0, 0.5], [0.5, 0.5, 0.0, 1.0]
    within = sum(2 * (x * (1 - x) + y * (1 - y)) for x, y in zip(a, b)) / 4
    d = np.array(a) - np.array(b)
    components = variance_components(a, b, 2)
    assert components.within == pytest.approx(within)
    assert components.between == pytest.approx(max(0.0, d.var(ddof=1) - within / 2))


def test_variance_components_separate_noise_from_fixed_differences():
    rng = np.random.default_rng(3)
    k, n = 4, 3000
    # Pure noise: every question has the same 50% chance for both models.
    noise = variance_components(rng.binomial(k, 0.5, n) / k, rng.binomial(k, 0.5, n) / k, k)
    assert noise.within == pytest.approx(0.5, abs=0.02)
    assert noise.between < 0.02
    # Fixed: each model always right or always wrong on a question.
    fixed = variance_components((rng.random(n) < 0.7) * 1.0, (rng.random(n) < 0.7) * 1.0, k)
    assert fixed.within == 0 and fixed.between == pytest.approx(2 * 0.7 * 0.3, abs=0.03)
    # More samples help the noisy case K-fold and the fixed case not at all.
    assert clustered_sample_size(0.05, noise, 8) < clustered_sample_size(0.05, noise, 1) / 4
    assert clustered_sample_size(0.05, fixed, 8) == clustered_sample_size(0.05, fixed, 1)


def test_clustered_sample_size_formula():
    components = variance_components([1.0, 0.5, 0.0, 0.5], [0.5, 0.5, 0.0, 1.0], 2)
    z = norm.ppf(0.975) + norm.ppf(0.8)
    expected = z**2 * (components.between + components.within / 3) / 0.1**2
    assert clustered_sample_size(0.1, components, 3) == math.ceil(expected)
