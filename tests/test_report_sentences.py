"""Sentence rules, over random outcomes (hypothesis): what a statistician would sign.

- no sentence calls a non-significant difference "no difference";
- the interval a sentence prints is the one its verdict uses, so they never disagree (or, in
  the narrow band where Tango's interval and the mid-p test differ, the sentence says so);
- "equivalent" only when the interval the equivalence verdict uses lies inside the margin,
  which every sentence names;
- sample sizes only for a named difference (--delta or the margin), never the observed one.
"""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from qatcmp.records import ScoreRecord
from qatcmp.report import build_report_from_scores
from qatcmp.report.wording import interval_text

SIGNIFICANT = {"difference", "small_difference"}
EQUIVALENT = {"equivalent", "small_difference"}


def scores_for(outcomes: dict[str, list[bool]]) -> list[ScoreRecord]:
    return [
        ScoreRecord(model=m, benchmark="mmlu_pro", item_id=str(q), correct=c, status="answered", finish_reason="stop")
        for m, row in outcomes.items()
        for q, c in enumerate(row)
    ]


@st.composite
def runs(draw):
    """2-4 models on the same n questions; each model flips a random share of a common base,
    so pairs range from identical to far apart (and land near the boundaries often)."""
    n = draw(st.integers(min_value=1, max_value=400))
    models = draw(st.integers(min_value=2, max_value=4))
    base = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    outcomes = {}
    for index in range(models):
        rate = draw(st.sampled_from([0.0, 0.01, 0.03, 0.08, 0.2, 0.5]))
        seed = draw(st.integers(min_value=0, max_value=2**16))
        flips = [((q * 2654435761 + seed * 40503) % 1000) / 1000 < rate for q in range(n)]
        bias = draw(st.booleans())
        # A biased model only loses answers (right -> wrong), which makes real differences.
        outcomes[f"m{index}"] = [(b and not f) if bias else (b != f) for b, f in zip(base, flips)]
    alpha = draw(st.sampled_from([0.05, 0.1, 0.01]))
    margin = draw(st.sampled_from([None, 0.02, 0.05, 0.1]))
    delta = draw(st.sampled_from([None, 0.03]))
    return outcomes, alpha, margin, delta


def _printed_interval(sentence: str) -> str:
    match = re.search(r"CI (\[[^\]]+\])", sentence)
    assert match, sentence
    return match.group(1)


@settings(max_examples=60, deadline=None)
@given(runs())
def test_sentences_never_overstate_and_print_the_interval_the_verdict_uses(case):
    outcomes, alpha, margin, delta = case
    report = build_report_from_scores(scores_for(outcomes), alpha=alpha, margin=margin, delta=delta)
    bench = report.benchmarks[0]
    for pair in bench.pairs:
        sentence = pair.sentence
        significant = pair.verdict in SIGNIFICANT
        assert "no difference" not in sentence.lower()
        assert ("real difference" in sentence) == significant
        assert pair.p_holm >= pair.mcnemar_midp_p - 1e-12 and pair.equivalence_p_holm >= pair.equivalence_p - 1e-12
        assert significant == (pair.p_holm < alpha)
        # The difference interval the sentence prints is the verdict's own.
        assert _printed_interval(sentence) == interval_text(pair.diff_ci_holm)
        low, high = pair.diff_ci_holm
        excludes_zero = not low <= 0 <= high
        if excludes_zero != significant:
            assert pair.interval_test_disagree and "the mid-p test, which decides" in sentence
        # Equivalence: decided on the interval it prints, inside the margin it names.
        assert f"±{report.margin * 100:g} points" in sentence
        eq_low, eq_high = pair.equivalence_ci_holm
        assert (pair.verdict in EQUIVALENT) == (-report.margin < eq_low and eq_high < report.margin)
        if pair.verdict in EQUIVALENT:
            assert interval_text(pair.equivalence_ci_holm) in sentence
        # Sizes only for the named difference.
        if "would detect" in sentence:
            named = delta if delta is not None else report.margin
            assert f"a difference of {named * 100:g} points" in sentence
            assert pair.power.delta == named


@settings(max_examples=30, deadline=None)
@given(runs())
def test_one_pair_uses_the_usual_levels(case):
    outcomes, alpha, margin, delta = case
    first_two = dict(list(outcomes.items())[:2])
    pair = build_report_from_scores(scores_for(first_two), alpha=alpha, margin=margin).benchmarks[0].pairs[0]
    assert pair.diff_ci_holm_confidence == 1 - alpha
    assert abs(pair.equivalence_ci_holm_confidence - (1 - 2 * alpha)) < 1e-12
    assert pair.equivalence_ci_holm == pair.equivalence_ci90
    assert "Holm" not in pair.sentence


def test_where_tango_and_mid_p_differ_the_sentence_says_which_decides():
    # 4 disagreements, all one way, of 20: mid-p 0.0625 (not significant), while Tango's 95%
    # interval just excludes 0.
    a = [True] * 20
    b = [False] * 4 + [True] * 16
    pair = build_report_from_scores(scores_for({"a": a, "b": b})).benchmarks[0].pairs[0]
    assert pair.verdict == "inconclusive" and pair.diff_ci_holm[0] > 0
    assert pair.interval_test_disagree
    assert "the interval, by Tango's method, just excludes 0, but the mid-p test, which decides, does not reject" in pair.sentence
    assert "not distinguishable at 20 questions" in pair.sentence
