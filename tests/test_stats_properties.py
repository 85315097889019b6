"""Properties every paired statistic must have, over random tables (hypothesis)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qatcmp.stats import (
    PairedTable,
    equivalence_tost,
    holm,
    independent_tests,
    mcnemar_exact_p,
    mcnemar_midp_p,
    paired_table,
    tango_interval,
    wilson_interval,
)

counts = st.integers(min_value=0, max_value=200)
tables = st.builds(PairedTable, counts, counts, counts, counts).filter(lambda t: t.n > 0)
fast = settings(max_examples=150, deadline=None)
# statsmodels' multipletests runs gc.collect() on every call (~60 ms): fewer examples.
slow_call = settings(max_examples=15, deadline=None)


@fast
@given(tables)
def test_p_values_are_probabilities(table):
    for p in (mcnemar_exact_p(table.a_only, table.b_only), mcnemar_midp_p(table.a_only, table.b_only)):
        assert 0.0 <= p <= 1.0


@fast
@given(tables)
def test_midp_is_never_above_exact(table):
    assert mcnemar_midp_p(table.a_only, table.b_only) <= mcnemar_exact_p(table.a_only, table.b_only) + 1e-12


@fast
@given(tables)
def test_interval_contains_the_estimate_and_stays_in_range(table):
    low, high = tango_interval(table)
    assert -1.0 <= low <= table.diff <= high <= 1.0
    assert low < high


@fast
@given(tables)
def test_swapping_models_mirrors_diff_and_interval(table):
    low, high = tango_interval(table)
    mirrored = table.swapped()
    assert mirrored.diff == pytest.approx(-table.diff)
    assert tango_interval(mirrored) == pytest.approx((-high, -low), abs=1e-7)
    assert mcnemar_midp_p(mirrored.a_only, mirrored.b_only) == mcnemar_midp_p(table.a_only, table.b_only)


@fast
@given(tables)
def test_equivalence_interval_is_inside_the_95_interval(table):
    low95, high95 = tango_interval(table)
    low90, high90 = equivalence_tost(table, margin=0.05).interval
    assert low95 - 1e-9 <= low90 <= high90 <= high95 + 1e-9


@slow_call
@given(st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=1, max_size=12))
def test_holm_never_lowers_a_p_value(p_values):
    adjusted = holm(p_values)
    for raw, adj in zip(p_values, adjusted):
        assert raw - 1e-12 <= adj <= 1.0


@fast
@given(st.lists(st.booleans(), min_size=1, max_size=300))
def test_identical_models_give_zero_diff_and_p_one(outcomes):
    table = paired_table(outcomes, outcomes)
    assert table.diff == 0 and table.flips == 0
    assert mcnemar_exact_p(table.a_only, table.b_only) == 1.0
    assert mcnemar_midp_p(table.a_only, table.b_only) == 1.0
    low, high = tango_interval(table)
    assert low < 0 < high
    correct = sum(outcomes)
    tests = independent_tests(correct, len(outcomes), correct, len(outcomes))
    assert min(tests.z_test_p, tests.chi2_p, tests.chi2_yates_p, tests.fisher_p) == pytest.approx(1.0)


@fast
@given(st.integers(min_value=1, max_value=500).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))))
def test_wilson_interval_contains_the_estimate(pair):
    correct, n = pair
    low, high = wilson_interval(correct, n)
    assert 0.0 <= low <= correct / n <= high <= 1.0
