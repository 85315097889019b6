"""Scores → the report model. Picks what to compare (every pair, or each variant against a
reference, among the models chosen), counts outcomes the way docs/report-schema.md documents,
and calls the pure statistics in qatcmp.stats. No IO here: reading a run folder is
from_run.py, writing files is write.py."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from qatcmp.errors import ConfigError, DataError
from qatcmp.records import ScoreRecord, utcnow
from qatcmp.report import wording
from qatcmp.report.categories import MIN_CATEGORY_QUESTIONS, add_categories
from qatcmp.report.model import (
    BENCHMARK_LABELS,
    BenchmarkReport,
    CochranQResult,
    ExcludedItem,
    ModeCheck,
    ModelResult,
    Report,
    Setup,
)
from qatcmp.report.pairs import (
    SERVER_ERROR,
    Levels,
    by_question,
    comparison_pairs,
    first_sample_outcomes,
    judge_pairs,
    paired_result,
    pass_rates,
)
from qatcmp.stats import clustered_accuracy, cochran_q, wilson_interval

NO_ANSWER_STATUSES = {"no_answer", "no_code"}
DEFAULT_ALPHA = 0.05
DEFAULT_MARGIN = 0.05

__all__ = [
    "MIN_CATEGORY_QUESTIONS", "NO_ANSWER_STATUSES", "SERVER_ERROR", "RunFacts", "benchmark_report",
    "build_report_from_scores", "comparison_pairs", "model_result", "paired_result", "pass_rates",
]


@dataclass
class RunFacts:
    """What the report needs from the run folder besides the scores (read by from_run.py)."""

    setup: Setup | None = None
    expected_answers: Mapping[str, int] = field(default_factory=dict)  # per benchmark, per model
    excluded: Sequence[ExcludedItem] = ()
    other_mode: str | None = None  # the MMLU-Pro mode also scored
    other_mode_scores: Sequence[ScoreRecord] | None = None
    resume_hint: str | None = None  # the command that fills in missing answers


def check_levels(alpha: float, margin: float, delta: float | None = None) -> None:
    if not 0 < alpha < 0.5:
        raise ConfigError("--alpha must be between 0 and 0.5")
    if not 0 < margin < 1:
        raise ConfigError("--margin must be between 0 and 1 (0.05 is 5 points)")
    if delta is not None and not 0 < delta < 1:
        raise ConfigError("--delta must be between 0 and 1 (0.05 is 5 points)")



# --------------------------------------------------------------------------- per model


def _mean(values: Iterable[float | int | None]) -> float | None:
    present = [float(v) for v in values if v is not None]
    return sum(present) / len(present) if present else None


def model_result(model: str, records: Sequence[ScoreRecord]) -> ModelResult:
    """One model's results on one benchmark. Server errors count in `errors` only. An answer
    whose finish_reason was not recorded (imported outputs) has unknown truncation; when no
    answer has one, truncation is unknown, not 0."""
    scored = [r for r in records if r.status != SERVER_ERROR]
    errors = len(records) - len(scored)
    n = len(scored)
    correct = sum(r.correct for r in scored)
    unknown = sum(1 for r in scored if r.finish_reason is None and not r.truncated)
    known = n == 0 or unknown < n
    kept = [r for r in scored if not r.truncated]
    per_question = by_question(scored)
    samples = max((len(rs) for rs in per_question.values()), default=1)
    result = ModelResult(
        model=model,
        n=n,
        correct=correct,
        accuracy=correct / n if n else None,
        ci95=wilson_interval(correct, n) if n else None,
        ci95_method="wilson" if n else None,
        truncated=sum(r.truncated for r in scored) if known else None,
        truncation_unknown=unknown,
        no_answer=sum(r.status in NO_ANSWER_STATUSES for r in scored),
        errors=errors,
        n_excluding_truncated=len(kept) if known else None,
        accuracy_excluding_truncated=sum(r.correct for r in kept) / len(kept) if kept and known else None,
        mean_completion_tokens=_mean(r.completion_tokens for r in scored),
        mean_reasoning_chars=_mean(r.reasoning_chars for r in scored),
        mean_content_chars=_mean(r.content_chars for r in scored),
        mean_latency_s=_mean(r.latency_s for r in scored),
        questions=len(per_question),
        samples=samples,
    )
    if samples > 1:
        _add_sample_statistics(result, per_question, samples)
    return result


def _add_sample_statistics(
    result: ModelResult, per_question: dict[str, list[ScoreRecord]], samples: int
) -> None:
    """K answers per question: the question is the unit, so the interval comes from the
    spread of per-question pass rates, not from N*K independent trials."""
    from qatcmp.benchmarks.humaneval import pass_at_k

    rates = [sum(r.correct for r in rs) / len(rs) for rs in per_question.values()]
    clustered = clustered_accuracy(rates)
    result.clustered_se = None if math.isnan(clustered.se) else clustered.se
    if result.clustered_se:
        result.ci95 = clustered.ci
        result.ci95_method = "clustered"
    # With no spread at all (every question all right, say) the clustered interval has zero
    # width; the Wilson interval on the records then stays in place.
    by_k: dict[str, float] = {}
    for k in sorted({1, samples}):
        eligible = [rs for rs in per_question.values() if len(rs) >= k]
        if eligible:
            values = [pass_at_k(len(rs), sum(r.correct for r in rs), k) for rs in eligible]
            by_k[str(k)] = sum(values) / len(values)
    result.pass_at_k = by_k


# --------------------------------------------------------------------------- benchmarks


def benchmark_report(
    benchmark: str,
    models: Sequence[str],
    records: Sequence[ScoreRecord],
    *,
    reference: str | None,
    alpha: float = DEFAULT_ALPHA,
    margin: float = DEFAULT_MARGIN,
    levels: Levels | None = None,
    max_tokens: Mapping[str, int | None] | None = None,
) -> BenchmarkReport:
    levels = levels or Levels(alpha=alpha, margin=margin)
    label = BENCHMARK_LABELS.get(benchmark, benchmark)
    by_model: dict[str, list[ScoreRecord]] = defaultdict(list)
    for record in records:
        by_model[record.model].append(record)
    present = [m for m in models if by_model.get(m)]
    results = {m: model_result(m, by_model[m]) for m in present}
    judged = []
    for a, b in comparison_pairs(present, reference if reference in present else None):
        found = paired_result(a, b, by_model[a], by_model[b], results[a], results[b], levels)
        if found is not None:
            judged.append(found)
    outcomes = {m: first_sample_outcomes(by_model[m]) for m in present}
    report = BenchmarkReport(
        benchmark=benchmark,
        label=label,
        samples=max((r.samples for r in results.values()), default=1),
        models=[results[m] for m in present],
        pairs=judge_pairs(judged, label, levels),
        cochran_q=_cochran(present, outcomes),
        truncation_warning=wording.truncation_warning(label, list(results.values()), max_tokens),
    )
    add_categories(report, present, by_model, outcomes, reference)
    _add_notes(report, list(results.values()))
    return report


def _cochran(models: Sequence[str], outcomes: dict[str, dict[str, bool]]) -> CochranQResult | None:
    if len(models) < 3:
        return None
    shared = sorted(set.intersection(*(set(outcomes[m]) for m in models)))
    if not shared:
        return None
    result = cochran_q([[outcomes[m][q] for m in models] for q in shared])
    return CochranQResult(statistic=result.statistic, p=result.p, df=result.df, n=len(shared))


def _add_notes(report: BenchmarkReport, results: Sequence[ModelResult]) -> None:
    errors = sum(r.errors or 0 for r in results)
    if errors:
        report.notes.append(
            f"{errors} requests got no answer from the server (server_error): they are counted "
            "in `errors` and left out of accuracy and of the paired comparisons."
        )
    unknown = [r for r in results if r.truncation_unknown]
    if unknown:
        listing = ", ".join(f"{r.model} {r.truncation_unknown}/{r.n}" for r in unknown)
        report.notes.append(
            f"Truncation is unknown for answers whose source does not record finish_reason ({listing})."
        )
    if report.samples > 1:
        report.notes.append(
            f"{report.samples} answers per question: accuracy intervals are clustered by "
            "question; the paired tests use each question's first answered sample; the "
            "independent-sample z-test compares per-question mean pass rates."
        )
    if report.pairs:
        count = len(report.pairs)
        report.notes.append(
            "Paired statistics use only the questions both models answered. "
            + (
                f"Holm adjusts for the {count} pairs of this benchmark, for the difference "
                "(McNemar mid-p) and for equivalence (TOST p) alike; the intervals in the "
                "sentences are at the level each decision was in effect made at."
                if count > 1
                else "One pair: nothing to adjust for."
            )
        )


# --------------------------------------------------------------------------- modes


def mark_mode_differences(bench: BenchmarkReport, other: BenchmarkReport, mode: str) -> None:
    """Attach the other extraction mode's result to every pair; mark the pairs whose verdict
    changes with the mode, and say so in their sentence."""
    others = {(p.a, p.b): p for p in other.pairs}
    bench.other_mode = mode
    for pair in bench.pairs:
        found = others.get((pair.a, pair.b))
        if found is None:
            continue
        pair.other_mode = ModeCheck(
            mode=mode, diff=found.diff, diff_ci_holm=found.diff_ci_holm, p_holm=found.p_holm,
            equivalent=found.equivalent, verdict=found.verdict,
        )
        pair.verdict_differs_by_mode = found.verdict != pair.verdict
        if pair.verdict_differs_by_mode:
            pair.sentence += wording.mode_difference_text(pair, bench.extraction_mode)
    bench.verdicts_differing_by_mode = sum(p.verdict_differs_by_mode for p in bench.pairs)


# --------------------------------------------------------------------------- a run


def _model_order(scores: Sequence[ScoreRecord], models: Sequence[str] | None, select: Sequence[str] | None) -> tuple[list[str], list[str]]:
    order = list(models) if models else list(dict.fromkeys(r.model for r in scores))
    order += [m for m in dict.fromkeys(r.model for r in scores) if m not in order]
    if not select:
        return order, order
    unknown = [m for m in select if m not in order]
    if unknown:
        raise ConfigError(f"--models {','.join(unknown)}: not a model of this run (models: {', '.join(order)})")
    if len(set(select)) != len(select):
        raise ConfigError("--models: a model is named twice")
    return list(select), order


def build_report_from_scores(
    scores: Sequence[ScoreRecord],
    *,
    models: Sequence[str] | None = None,
    benchmarks: Sequence[str] | None = None,
    source: str = "",
    reference: str | None = None,
    alpha: float = DEFAULT_ALPHA,
    margin: float | None = None,
    delta: float | None = None,
    select: Sequence[str] | None = None,
    facts: RunFacts | None = None,
) -> Report:
    """The typed report from scores (no IO). Model and benchmark order default to the order
    of first appearance; `select` (--models) limits the comparison, and with it the family
    Holm adjusts over. `margin` None: the default margin, recorded as such."""
    facts = facts or RunFacts()
    margin_value = DEFAULT_MARGIN if margin is None else margin
    check_levels(alpha, margin_value, delta)
    order, run_models = _model_order(scores, models, select)
    if reference is not None and reference not in order:
        raise ConfigError(f"--reference {reference}: not a model of this run (models: {', '.join(order)})")
    levels = Levels(alpha=alpha, margin=margin_value, delta=delta)
    excluded = {(e.benchmark, e.item_id) for e in facts.excluded}
    wanted = list(benchmarks) if benchmarks else list(dict.fromkeys(r.benchmark for r in scores))
    setup = facts.setup
    max_tokens = {v.model: v.max_tokens for v in setup.variants} if setup else None
    mode = setup.extraction_mode if setup else None
    reports = []
    for name in wanted:
        records = _kept(scores, name, order, excluded)
        if not records:
            continue
        bench = benchmark_report(name, order, records, reference=reference, levels=levels, max_tokens=max_tokens)
        bench.excluded_items = sum(1 for b, _ in excluded if b == name)
        bench.missing_answers = _missing(bench, facts.expected_answers.get(name), order)
        if name == "mmlu_pro":
            bench.extraction_mode = mode
            if facts.other_mode and facts.other_mode_scores:
                other_records = _kept(facts.other_mode_scores, name, order, excluded)
                if other_records:
                    other = benchmark_report(name, order, other_records, reference=reference, levels=levels)
                    mark_mode_differences(bench, other, facts.other_mode)
        reports.append(bench)
    if not reports:
        raise DataError(f"{source or 'the run'}: no scored answers to report on")
    report = Report(
        kind="run",
        source=source,
        created_at=utcnow(),
        alpha=alpha,
        margin=margin_value,
        margin_source="default" if margin is None else "--margin",
        delta=levels.sizing_delta,
        delta_source="--delta" if delta is not None else "margin",
        reference=reference,
        models=order,
        run_models=run_models if order != run_models else None,
        extraction_mode=mode if any(b.benchmark == "mmlu_pro" for b in reports) else None,
        setup=setup,
        excluded_items=list(facts.excluded),
        benchmarks=reports,
    )
    report.warnings = wording.run_warnings(report, facts.resume_hint)
    return report


def _kept(scores: Sequence[ScoreRecord], benchmark: str, models: Sequence[str], excluded: set) -> list[ScoreRecord]:
    chosen = set(models)
    return [
        r for r in scores
        if r.benchmark == benchmark and r.model in chosen and (r.benchmark, r.item_id) not in excluded
    ]


def _missing(bench: BenchmarkReport, expected: int | None, models: Sequence[str]) -> int:
    """Answers the run should hold but does not: server errors, and questions never asked
    (an interrupted run). `expected` is per model, excluded questions already left out."""
    answered = {r.model: r.n for r in bench.models}
    if expected is None:
        return sum(r.errors or 0 for r in bench.models)
    return sum(max(0, expected - answered.get(m, 0)) for m in models)
