"""Report-level properties over random per-question outcomes (hypothesis)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qatcmp.records import ScoreRecord
from qatcmp.report import build_report_from_scores


def scores_for(outcomes: dict[str, list[bool]]) -> list[ScoreRecord]:
    return [
        ScoreRecord(model=m, benchmark="mmlu_pro", item_id=str(q), correct=c, status="answered")
        for m, row in outcomes.items()
        for q, c in enumerate(row)
    ]


outcome_pairs = st.integers(min_value=1, max_value=120).flatmap(
    lambda n: st.tuples(st.lists(st.booleans(), min_size=n, max_size=n), st.lists(st.booleans(), min_size=n, max_size=n))
)


@settings(max_examples=25, deadline=None)
@given(outcome_pairs)
def test_pair_numbers_are_consistent_and_mirror_when_swapped(pair_outcomes):
    a, b = pair_outcomes
    scores = scores_for({"a": a, "b": b})
    forward = build_report_from_scores(scores, models=["a", "b"]).benchmarks[0].pairs[0]
    backward = build_report_from_scores(scores, models=["b", "a"]).benchmarks[0].pairs[0]
    n = len(a)
    assert forward.n == n
    assert forward.diff == pytest.approx((sum(a) - sum(b)) / n)
    assert forward.diff_ci95[0] <= forward.diff <= forward.diff_ci95[1]
    for p in (forward.mcnemar_exact_p, forward.mcnemar_midp_p, forward.p_holm, forward.z_test_p, forward.fisher_p):
        assert 0.0 <= p <= 1.0
    assert backward.diff == pytest.approx(-forward.diff)
    assert backward.diff_ci95 == pytest.approx((-forward.diff_ci95[1], -forward.diff_ci95[0]), abs=1e-7)
    assert backward.mcnemar_midp_p == forward.mcnemar_midp_p
    assert backward.verdict == forward.verdict
    assert "no difference" not in forward.sentence.lower()


@settings(max_examples=15, deadline=None)
@given(st.lists(st.booleans(), min_size=1, max_size=150))
def test_identical_models_give_zero_diff_and_p_one(outcomes):
    pair = build_report_from_scores(scores_for({"a": outcomes, "b": list(outcomes)})).benchmarks[0].pairs[0]
    assert pair.diff == 0 and pair.flips == 0 and pair.agreement == 1
    assert pair.mcnemar_exact_p == 1.0 and pair.mcnemar_midp_p == 1.0 and pair.p_holm == 1.0
    assert pair.verdict in ("equivalent", "inconclusive")
