"""The intervals that agree with a Holm-adjusted decision, and TOST p-values (hypothesis)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qatcmp.stats import PairedTable, compatible_level, equivalence_tost, holm, tango_interval, tost_interval, tost_p
from qatcmp.stats.compatible import confidence_percent

counts = st.integers(min_value=0, max_value=150)
tables = st.builds(PairedTable, counts, counts, counts, counts).filter(lambda t: t.n > 0)
margins = st.sampled_from([0.01, 0.03, 0.05, 0.1, 0.2])


@settings(max_examples=150, deadline=None)
@given(tables, margins, st.sampled_from([0.01, 0.05, 0.1]))
def test_tost_p_below_alpha_exactly_when_the_interval_is_inside_the_margin(table, margin, alpha):
    result = tost_p(table, margin)
    low, high = tost_interval(table, alpha)
    inside = -margin < low and high < margin
    assert 0 <= result.p <= 1 and result.p == max(result.p_lower, result.p_upper)
    if abs(result.p - alpha) > 1e-9:
        assert (result.p < alpha) == inside
    assert equivalence_tost(table, margin, alpha).equivalent == inside


@settings(max_examples=20, deadline=None)
@given(st.lists(tables, min_size=2, max_size=5), margins)
def test_holm_compatible_tost_intervals_agree_with_holm(family, margin):
    alpha = 0.05
    raw = [tost_p(t, margin).p for t in family]
    adjusted = holm(raw)
    for table, p, p_adjusted in zip(family, raw, adjusted):
        level = compatible_level(alpha, p, p_adjusted)
        low, high = tost_interval(table, level)
        if abs(p_adjusted - alpha) > 1e-9:
            assert (p_adjusted < alpha) == (-margin < low and high < margin)


def test_compatible_level_is_holms_step_level():
    # Three pairs, smallest p first: alpha/3, then alpha/2 when the order holds.
    assert compatible_level(0.05, 0.01, 0.03) == pytest.approx(0.05 / 3)
    assert compatible_level(0.05, 0.02, 0.04) == pytest.approx(0.025)
    assert compatible_level(0.05, 0.5, 0.5) == 0.05
    assert compatible_level(0.05, 0.0, 0.0) == 0.05


def test_tost_reference_case():
    # The statistics notes' example: 9 vs 1 discordant of 100. +8 points is far outside ±5.
    table = PairedTable(89, 9, 1, 1)
    assert tost_p(table, 0.05).p > 0.5
    assert tost_interval(table, 0.05) == pytest.approx(tango_interval(table, 0.90))


def test_confidence_labels():
    assert (confidence_percent(0.05), confidence_percent(0.05, two_sided=False), confidence_percent(0.05 / 3)) == ("95%", "90%", "98.3%")
