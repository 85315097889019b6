"""The report built from per-question scores: numbers that match the outcomes, verdicts and
sentences, the report.json contract, and the files written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from statsmodels.stats.contingency_tables import cochrans_q

from qatcmp.errors import ConfigError
from qatcmp.records import BenchmarkSelection, RunManifest, RunSpec, ScoreRecord, utcnow
from qatcmp.report import (
    MIN_CATEGORY_QUESTIONS,
    build_report,
    build_report_from_scores,
    format_summary,
)
from qatcmp.rundir import RunDir, write_json_atomic, write_jsonl_atomic
from qatcmp.stats import mcnemar_exact_p, mcnemar_midp_p, paired_table, tango_interval

# --------------------------------------------------------------------------- helpers


def score(model: str, item: int | str, correct: bool, benchmark: str = "humaneval", **fields) -> ScoreRecord:
    status = fields.pop("status", "passed" if correct else "failed")
    fields.setdefault("finish_reason", "length" if fields.get("truncated") else "stop")
    return ScoreRecord(model=model, benchmark=benchmark, item_id=str(item), correct=correct, status=status, **fields)


def scores_from_wrong(wrong: dict[str, set[int]], n: int, benchmark: str = "humaneval") -> list[ScoreRecord]:
    """Every model answers questions 0..n-1, wrong exactly on the given ones."""
    return [score(m, q, q not in bad, benchmark) for m, bad in wrong.items() for q in range(n)]


# The motivating HumanEval table (98, 90, 90 of 100) with known discordant splits:
# 6bit vs qat8: 9 vs 1; 6bit vs 4bit: 9 vs 1; qat8 vs 4bit: 4 vs 4.
MOTIVATING_WRONG = {
    "6bit": {0, 1},
    "qat8": set(range(1, 11)),
    "4bit": {1, 2, 3, 4, 5, 6, 11, 12, 13, 14},
}


def make_run(folder: Path, scores: list[ScoreRecord], models: list[str], samples: int = 1) -> Path:
    """A run folder holding a manifest and an up-to-date scores.jsonl (no transcripts)."""
    from qatcmp.scoring import SCORES_META

    benchmarks = list(dict.fromkeys(s.benchmark for s in scores))
    selections = [
        BenchmarkSelection(
            name=b,
            dataset="builtin:test",
            total_available=1000,
            item_ids=sorted({s.item_id for s in scores if s.benchmark == b}),
            prompt_template="",
        )
        for b in benchmarks
    ]
    now = utcnow()
    manifest = RunManifest(
        qatcmp_version="test",
        created_at=now,
        updated_at=now,
        config={},
        spec=RunSpec(benchmarks=selections, seed=0, samples=samples, models={m: {} for m in models}),
    )
    run = RunDir(folder)
    run.write_manifest(manifest)
    write_jsonl_atomic(run.scores, scores)
    write_json_atomic(folder / SCORES_META, {"mode": "default"})
    return folder


def pair_of(report, a, b, benchmark=None):
    for bench in report.benchmarks:
        if benchmark and bench.benchmark != benchmark:
            continue
        for pair in bench.pairs:
            if (pair.a, pair.b) == (a, b):
                return pair
    raise AssertionError(f"no pair {a} vs {b}")


# --------------------------------------------------------------------------- numbers


def test_motivating_table_paired():
    scores = scores_from_wrong(MOTIVATING_WRONG, 100)
    report = build_report_from_scores(scores, models=["6bit", "qat8", "4bit"])
    bench = report.benchmarks[0]
    assert [(m.model, m.correct, m.n) for m in bench.models] == [("6bit", 98, 100), ("qat8", 90, 100), ("4bit", 90, 100)]
    assert bench.models[0].ci95 == pytest.approx((0.930, 0.994), abs=5e-4)

    pair = pair_of(report, "6bit", "qat8")
    assert (pair.n, pair.a_only, pair.b_only, pair.both_correct, pair.neither_correct) == (100, 9, 1, 89, 1)
    assert pair.diff == pytest.approx(0.08)
    assert pair.mcnemar_exact_p == pytest.approx(0.0215, abs=5e-5)
    assert pair.mcnemar_midp_p == pytest.approx(0.0117, abs=5e-5)
    # Holm over the three pairs: the exact test no longer reaches 0.05; mid-p does.
    assert pair.p_holm_exact == pytest.approx(0.0645, abs=5e-5)
    assert pair.p_holm == pytest.approx(3 * mcnemar_midp_p(9, 1))
    assert pair.flips == pytest.approx(0.10) and pair.agreement == pytest.approx(0.90)
    assert pair.z_test_p == pytest.approx(0.0172, abs=5e-5)
    assert pair.chi2_yates_p == pytest.approx(0.0371, abs=5e-5)
    assert pair.fisher_p == pytest.approx(0.0330, abs=5e-5)
    assert pair.verdict == "difference"
    low, high = pair.diff_ci95
    assert low > 0 and pair.diff_ci95 == pytest.approx(tango_interval(paired_table(
        [q not in MOTIVATING_WRONG["6bit"] for q in range(100)],
        [q not in MOTIVATING_WRONG["qat8"] for q in range(100)],
    )))
    # The sentence prints the interval the Holm-adjusted verdict uses: Tango at alpha/3 for
    # the pair Holm tests first (its mid-p is the smallest, tied with 6bit vs 4bit).
    adjusted = tango_interval(paired_table(
        [q not in MOTIVATING_WRONG["6bit"] for q in range(100)],
        [q not in MOTIVATING_WRONG["qat8"] for q in range(100)],
    ), 1 - 0.05 / 3)
    assert pair.diff_ci_holm == pytest.approx(adjusted) and pair.diff_ci_holm_confidence == pytest.approx(1 - 0.05 / 3)
    assert adjusted[0] < low and adjusted[0] > 0
    assert pair.sentence.startswith(
        f"6bit vs qat8, HumanEval: +8.0 points (98.3% CI [+{adjusted[0] * 100:.1f}, +{adjusted[1] * 100:.1f}], "
        "Holm-adjusted for 3 pairs)"
    )
    assert "McNemar mid-p = 0.012, Holm-adjusted p = 0.035 — likely a real difference" in pair.sentence

    same = pair_of(report, "qat8", "4bit")
    assert (same.a_only, same.b_only, same.diff) == (4, 4, 0)
    assert same.mcnemar_exact_p == 1.0 and same.verdict == "inconclusive"
    assert "not distinguishable at 100 questions" in same.sentence


def test_cochran_q_matches_statsmodels_on_the_outcome_matrix():
    scores = scores_from_wrong(MOTIVATING_WRONG, 100)
    bench = build_report_from_scores(scores, models=["6bit", "qat8", "4bit"]).benchmarks[0]
    matrix = np.array([[q not in MOTIVATING_WRONG[m] for m in ("6bit", "qat8", "4bit")] for q in range(100)], dtype=int)
    expected = cochrans_q(matrix)
    assert bench.cochran_q.statistic == pytest.approx(expected.statistic)
    assert bench.cochran_q.p == pytest.approx(expected.pvalue)
    assert (bench.cochran_q.df, bench.cochran_q.n) == (2, 100)


def test_two_models_have_no_cochran_q_and_no_holm_in_the_sentence():
    scores = scores_from_wrong({"a": {0, 1, 2}, "b": {5}}, 30)
    report = build_report_from_scores(scores)
    assert report.benchmarks[0].cochran_q is None
    pair = report.benchmarks[0].pairs[0]
    assert pair.p_holm == pytest.approx(pair.mcnemar_midp_p)
    assert "Holm" not in pair.sentence


def test_reference_compares_each_variant_with_it():
    scores = scores_from_wrong(MOTIVATING_WRONG, 100)
    report = build_report_from_scores(scores, models=["6bit", "qat8", "4bit"], reference="qat8")
    pairs = [(p.a, p.b) for p in report.benchmarks[0].pairs]
    assert pairs == [("6bit", "qat8"), ("4bit", "qat8")]
    assert pair_of(report, "6bit", "qat8").diff == pytest.approx(0.08)
    with pytest.raises(ConfigError, match="--reference"):
        build_report_from_scores(scores, reference="8bit")


def test_swapping_model_order_mirrors_the_pair():
    scores = scores_from_wrong(MOTIVATING_WRONG, 100)
    forward = pair_of(build_report_from_scores(scores, models=["6bit", "qat8"]), "6bit", "qat8")
    backward = pair_of(build_report_from_scores(scores, models=["qat8", "6bit"]), "qat8", "6bit")
    assert backward.diff == pytest.approx(-forward.diff)
    assert backward.diff_ci95 == pytest.approx((-forward.diff_ci95[1], -forward.diff_ci95[0]))
    assert (backward.a_only, backward.b_only) == (forward.b_only, forward.a_only)


def test_server_errors_are_counted_but_left_out_of_accuracy_and_pairs():
    scores = scores_from_wrong({"a": {0}, "b": {1, 2}}, 20)
    scores = [s for s in scores if not (s.model == "b" and s.item_id == "3")]
    scores.append(score("b", 3, False, status="server_error"))
    report = build_report_from_scores(scores)
    bench = report.benchmarks[0]
    b = bench.models[1]
    assert (b.n, b.correct, b.errors) == (19, 17, 1)
    assert bench.pairs[0].n == 19
    assert any("server_error" in note for note in bench.notes)


def test_a_model_the_server_never_answered_gets_no_pairs_but_a_row(tmp_path):
    scores = scores_from_wrong({"a": {0}, "b": {1}}, 10) + [
        score("down", q, False, status="server_error") for q in range(10)
    ]
    report = build_report_from_scores(scores, models=["a", "b", "down"])
    bench = report.benchmarks[0]
    down = bench.models[2]
    assert (down.n, down.errors, down.accuracy, down.ci95) == (0, 10, None, None)
    assert [(p.a, p.b) for p in bench.pairs] == [("a", "b")]
    assert bench.cochran_q is None  # no question all three answered
    from qatcmp.report import write_report

    write_report(report, tmp_path)  # plots and markdown cope with the empty row
    assert "| down | — |" in (tmp_path / "report.md").read_text()


def test_truncation_and_no_answer_counts_and_accuracy_without_truncated():
    scores = scores_from_wrong({"short": {0}, "long": {0, 1, 2, 3, 4}}, 40, benchmark="mmlu_pro")
    for s in scores:
        if s.model == "long" and s.item_id in {"1", "2", "3", "4"}:
            s.truncated, s.status, s.finish_reason = True, "truncated", "length"
        if s.model == "short" and s.item_id == "0":
            s.status = "no_answer"
    report = build_report_from_scores(scores)
    bench = report.benchmarks[0]
    long = bench.models[1]
    assert (long.truncated, long.n_excluding_truncated) == (4, 36)
    assert long.accuracy_excluding_truncated == pytest.approx(35 / 36)
    assert bench.models[0].no_answer == 1
    assert bench.truncation_warning and "long 4/40" in bench.truncation_warning
    assert report.warnings == [bench.truncation_warning]
    assert format_summary(report).startswith("WARNING: MMLU-Pro: truncation differs")


def test_equal_truncation_gives_no_warning():
    scores = scores_from_wrong({"a": {0, 1}, "b": {0, 1}}, 40)
    for s in scores:
        s.truncated = s.item_id == "0"
    assert build_report_from_scores(scores).warnings == []


def test_equivalence_verdict_with_many_questions_and_few_flips():
    n = 1000
    scores = scores_from_wrong({"a": set(range(0, 100)) | {500, 501}, "b": set(range(2, 100)) | {600, 601, 602}}, n)
    pair = build_report_from_scores(scores).benchmarks[0].pairs[0]
    assert pair.equivalent and pair.verdict == "equivalent"
    lo, hi = pair.equivalence_ci90
    assert -0.05 < lo < pair.diff < hi < 0.05
    assert "— equivalent within ±5 points (90% CI [" in pair.sentence
    assert pair.equivalence_ci_holm == pytest.approx(pair.equivalence_ci90)  # one pair: no adjustment


def test_inconclusive_sentence_sizes_the_study_and_never_says_no_difference():
    # 50 questions, 20% disagreement, 4 points apart: the example.
    shared = set(range(20, 30))
    scores = scores_from_wrong({"a": set(range(0, 6)) | shared, "b": set(range(6, 10)) | shared}, 50, "mmlu_pro")
    report = build_report_from_scores(scores)
    pair = report.benchmarks[0].pairs[0]
    assert (pair.a_only, pair.b_only, pair.n) == (4, 6, 50)
    assert pair.verdict == "inconclusive"
    assert pair.power.discordance == pytest.approx(0.20)
    # Sized for the margin (5 points), never for the observed difference (4 points).
    assert pair.power.delta == pytest.approx(0.05) and pair.power.delta_source == "margin"
    assert "about 630 questions would detect a difference of 5 points (the equivalence margin)" in pair.sentence
    assert pair.power.mde == pytest.approx(0.173, abs=0.001)
    named = build_report_from_scores(scores, delta=0.04).benchmarks[0].pairs[0]
    assert named.power.n_needed == 979  # the statistics notes: psi 20%, 4 points
    assert "about 980 questions would detect a difference of 4 points (--delta)" in named.sentence
    for text in (pair.sentence, format_summary(report)):
        assert "no difference" not in text.lower()


def test_identical_answers_on_few_questions_are_not_called_equivalent():
    pair = build_report_from_scores(scores_from_wrong({"a": {0, 1}, "b": {0, 1}}, 6)).benchmarks[0].pairs[0]
    assert (pair.diff, pair.mcnemar_midp_p, pair.verdict) == (0, 1.0, "inconclusive")
    assert pair.sentence.endswith("not distinguishable at 6 questions: the models agreed on every question, too few to show equivalence within ±5 points")


def test_categories_only_when_large_enough():
    n = 2 * MIN_CATEGORY_QUESTIONS + 30
    category = lambda q: "math" if q < MIN_CATEGORY_QUESTIONS else ("law" if q < 2 * MIN_CATEGORY_QUESTIONS else "history")  # noqa: E731
    scores = [
        score(m, q, (q % 7 != 0) if m == "a" else (q % 5 != 0), "mmlu_pro", category=category(q), status="answered")
        for m in ("a", "b")
        for q in range(n)
    ]
    bench = build_report_from_scores(scores).benchmarks[0]
    assert [c.category for c in bench.categories] == ["law", "math"]
    math_result = next(c for c in bench.categories if c.category == "math")
    assert math_result.n == MIN_CATEGORY_QUESTIONS
    a_correct = sum(q % 7 != 0 for q in range(MIN_CATEGORY_QUESTIONS))
    assert math_result.models[0].correct == a_correct
    assert math_result.pairs[0].mcnemar_midp_p == pytest.approx(
        mcnemar_midp_p(*_discordant(range(MIN_CATEGORY_QUESTIONS)))
    )
    assert "2 of 3" in bench.categories_note

    small = build_report_from_scores([s for s in scores if int(s.item_id) >= 2 * MIN_CATEGORY_QUESTIONS])
    assert small.benchmarks[0].categories == []
    assert "left out" in small.benchmarks[0].categories_note


def _discordant(questions):
    a_only = sum((q % 7 != 0) and not (q % 5 != 0) for q in questions)
    b_only = sum(not (q % 7 != 0) and (q % 5 != 0) for q in questions)
    return a_only, b_only


def test_several_samples_per_question_cluster_and_pass_at_k():
    # 10 questions x 4 samples; model a gets c_i of 4 right on question i.
    right = [4, 4, 3, 2, 0, 1, 4, 0, 2, 3]
    scores = [
        score("a", q, s < c, sample=s) for q, c in enumerate(right) for s in range(4)
    ] + [score("b", q, s == 0, sample=s) for q in range(10) for s in range(4)]
    report = build_report_from_scores(scores)
    a = report.benchmarks[0].models[0]
    rates = np.array(right) / 4
    assert a.samples == 4 and a.questions == 10 and a.n == 40
    assert a.accuracy == pytest.approx(rates.mean())
    assert a.clustered_se == pytest.approx(rates.std(ddof=1) / np.sqrt(10))
    assert a.ci95_method == "clustered"
    assert a.pass_at_k["1"] == pytest.approx(rates.mean())
    assert a.pass_at_k["4"] == pytest.approx(np.mean([c > 0 for c in right]))
    b = report.benchmarks[0].models[1]  # right on sample 0 only: a quarter of every question
    assert b.clustered_se == 0 and b.ci95_method == "wilson" and b.ci95[0] < 0.25 < b.ci95[1]
    pair = report.benchmarks[0].pairs[0]
    # Paired tests use sample 0 of each question: a right where c_i > 0, b always right.
    assert (pair.a_only, pair.b_only) == (0, 2)
    assert any("first answered sample" in note for note in report.benchmarks[0].notes)
    # Over all samples: mean per-question pass-rate difference, clustered by question.
    differences = rates - 0.25
    assert pair.diff_all_samples == pytest.approx(differences.mean())
    half = 1.959964 * differences.std(ddof=1) / np.sqrt(10)
    assert pair.diff_all_samples_ci95 == pytest.approx((differences.mean() - half, differences.mean() + half), abs=1e-5)
    assert pair.samples == 4
    assert pair.sentence.endswith(f"(first sample per question; over all 4 samples: {differences.mean() * 100:+.1f} points "
                                  f"[{(differences.mean() - half) * 100:+.1f}, {(differences.mean() + half) * 100:+.1f}])")


def test_mmlu_and_humaneval_each_get_their_section():
    scores = scores_from_wrong({"a": {0}, "b": {1, 2}}, 20) + scores_from_wrong({"a": {3}, "b": set()}, 20, "mmlu_pro")
    report = build_report_from_scores(scores, benchmarks=["mmlu_pro", "humaneval"])
    assert [b.label for b in report.benchmarks] == ["MMLU-Pro", "HumanEval"]


def test_exact_p_values_match_direct_computation_for_every_pair():
    scores = scores_from_wrong(MOTIVATING_WRONG, 100)
    report = build_report_from_scores(scores, models=["6bit", "qat8", "4bit"])
    for pair in report.benchmarks[0].pairs:
        assert pair.mcnemar_exact_p == pytest.approx(mcnemar_exact_p(pair.a_only, pair.b_only))


# --------------------------------------------------------------------------- files and contract

CONTRACT_MODEL_KEYS = {"model", "n", "correct", "accuracy", "ci95", "truncated", "no_answer", "errors",
                       "accuracy_excluding_truncated", "mean_completion_tokens", "mean_reasoning_chars",
                       "mean_latency_s", "clustered_se", "pass_at_k"}
CONTRACT_PAIR_KEYS = {"a", "b", "n", "a_only", "b_only", "diff", "diff_ci95", "mcnemar_exact_p",
                      "mcnemar_midp_p", "p_holm", "flips", "agreement", "equivalent", "z_test_p", "chi2_p",
                      "chi2_yates_p", "fisher_p", "power", "sentence", "verdict"}


def test_build_report_writes_json_markdown_and_pngs(tmp_path):
    run = make_run(tmp_path / "run", scores_from_wrong(MOTIVATING_WRONG, 100), ["6bit", "qat8", "4bit"])
    report = build_report(run)
    data = json.loads((run / "report.json").read_text())
    assert data["schema_version"] == 2 and data["kind"] == "run"
    bench = data["benchmarks"][0]
    assert CONTRACT_MODEL_KEYS <= set(bench["models"][0])
    assert CONTRACT_PAIR_KEYS <= set(bench["pairs"][0])
    assert {"statistic", "p", "df"} <= set(bench["cochran_q"])
    assert {"discordance", "mde", "n_needed", "delta"} <= set(bench["pairs"][0]["power"])
    assert data["benchmarks"][0]["pairs"][0]["a_only"] == report.benchmarks[0].pairs[0].a_only
    markdown = (run / "report.md").read_text()
    assert "| 6bit | 98.0% (98/100) |" in markdown
    assert report.benchmarks[0].pairs[0].sentence in markdown
    for png in ("accuracy.png", "differences.png"):
        assert (run / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert png in data["plots"]


def test_build_report_rejects_a_folder_that_is_not_a_run(tmp_path):
    from qatcmp.errors import DataError

    with pytest.raises(DataError, match="not a qatcmp run folder"):
        build_report(tmp_path)
