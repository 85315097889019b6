"""The report: from per-question scores to report.json, report.md and plots.

The statistics are pure functions in qatcmp.stats; this module picks what to compare (every
pair, or each variant against a reference), counts outcomes the way the report documents
(docs/report-schema.md), and writes the files. report.json is a stable contract: its keys are
documented there, and a change to them needs a new schema version.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime
from itertools import combinations
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from qatcmp import __version__
from qatcmp.errors import ConfigError, DataError
from qatcmp.records import ScoreRecord, utcnow
from qatcmp.rundir import RunDir, write_json_atomic, write_text_atomic
from qatcmp.stats import (
    PairedTable,
    clustered_accuracy,
    clustered_paired_difference,
    cochran_q,
    equivalence_tost,
    holm,
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

REPORT_SCHEMA_VERSION = 1
TARGET_POWER = 0.8
# Per-category results need hundreds of questions per category to say anything; below this
# they are left out with a note rather than shown as noise.
MIN_CATEGORY_QUESTIONS = 100
# Truncation counts that differ by at least this many answers and this share of n get a
# warning: a chattier variant can lose by hitting the budget.
TRUNCATION_WARN_COUNT = 2
TRUNCATION_WARN_SHARE = 0.01

NO_ANSWER_STATUSES = {"no_answer", "no_code"}
SERVER_ERROR = "server_error"
BENCHMARK_LABELS = {"mmlu_pro": "MMLU-Pro", "humaneval": "HumanEval"}
INDEPENDENT_NOTE = (
    "z_test_p, chi2_p, chi2_yates_p and fisher_p treat the two models as independent samples "
    "and ignore the pairing; they are shown only to compare with tables published that way."
)

Interval = tuple[float, float]


class ReportModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelResult(ReportModel):
    model: str
    n: int  # scored answers (server errors left out)
    correct: int
    accuracy: float | None
    ci95: Interval | None
    ci95_method: Literal["wilson", "clustered"] | None = "wilson"
    truncated: int | None = None
    no_answer: int | None = None
    errors: int | None = None  # server_error: the server never answered
    n_excluding_truncated: int | None = None
    accuracy_excluding_truncated: float | None = None
    mean_completion_tokens: float | None = None
    mean_reasoning_chars: float | None = None
    mean_content_chars: float | None = None
    mean_latency_s: float | None = None
    questions: int | None = None  # distinct questions with at least one scored answer
    samples: int = 1  # answers per question (K)
    clustered_se: float | None = None  # K > 1: sd of per-question pass rates / sqrt(N)
    pass_at_k: dict[str, float] | None = None  # K > 1: {"1": ..., "K": ...}


class PairPower(ReportModel):
    discordance: float  # observed share of questions the two models disagree on
    alpha: float
    power: float
    mde: float | None  # minimum detectable difference at this n and discordance
    delta: float  # the difference the sample size below is for
    n_needed: int | None  # questions needed to detect `delta` (paired design)


class PairResult(ReportModel):
    a: str
    b: str
    n: int | None  # questions both answered (paired); None in counts-only reports
    both_correct: int | None = None
    a_only: int | None = None
    b_only: int | None = None
    neither_correct: int | None = None
    accuracy_a: float | None = None  # over the paired questions
    accuracy_b: float | None = None
    diff: float  # accuracy(a) - accuracy(b)
    diff_ci95: Interval | None = None
    diff_ci_method: str | None = None
    mcnemar_exact_p: float | None = None
    mcnemar_midp_p: float | None = None
    p_holm: float | None = None  # Holm over this benchmark's pairs, on the mid-p values
    p_holm_exact: float | None = None  # Holm on the exact p-values
    flips: float | None = None
    agreement: float | None = None
    correlation: float | None = None
    equivalence_margin: float
    equivalence_ci90: Interval | None = None
    equivalent: bool | None = None
    verdict: Literal["difference", "small_difference", "equivalent", "inconclusive", "unpaired"]
    sentence: str
    power: PairPower | None = None
    # K > 1 samples: the mean per-question pass-rate difference over all samples, with a
    # normal interval from the spread of per-question differences (question = cluster).
    samples: int = 1  # answers per question; the paired tests use the first one
    diff_all_samples: float | None = None
    diff_all_samples_ci95: Interval | None = None
    z_test_p: float
    chi2_p: float
    chi2_yates_p: float
    fisher_p: float
    independent_tests_note: str = INDEPENDENT_NOTE


class CochranQResult(ReportModel):
    statistic: float
    p: float
    df: int
    n: int  # questions every model answered


class CategoryModel(ReportModel):
    model: str
    n: int
    correct: int
    accuracy: float
    ci95: Interval


class CategoryPair(ReportModel):
    a: str
    b: str
    n: int
    diff: float
    diff_ci95: Interval
    mcnemar_midp_p: float


class CategoryResult(ReportModel):
    category: str
    n: int
    models: list[CategoryModel]
    pairs: list[CategoryPair]


class BenchmarkReport(ReportModel):
    benchmark: str
    label: str
    samples: int = 1
    models: list[ModelResult]
    pairs: list[PairResult]
    cochran_q: CochranQResult | None = None
    categories: list[CategoryResult] = Field(default_factory=list)
    categories_note: str | None = None
    truncation_warning: str | None = None
    notes: list[str] = Field(default_factory=list)


class Report(ReportModel):
    schema_version: int = REPORT_SCHEMA_VERSION
    kind: Literal["run", "counts"]
    source: str
    created_at: datetime
    qatcmp_version: str = __version__
    alpha: float
    margin: float
    target_power: float = TARGET_POWER
    reference: str | None = None
    models: list[str]
    benchmarks: list[BenchmarkReport]
    warnings: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    plots: list[str] = Field(default_factory=list)


# --------------------------------------------------------------------------- choosing pairs


def comparison_pairs(models: Sequence[str], reference: str | None) -> list[tuple[str, str]]:
    """Every pair in model order, or each other variant against the reference (diff is then
    variant - reference)."""
    if reference is None:
        return list(combinations(models, 2))
    if reference not in models:
        raise ConfigError(
            f"--reference {reference}: not a model of this run (models: {', '.join(models)})"
        )
    return [(model, reference) for model in models if model != reference]


def _check_levels(alpha: float, margin: float) -> None:
    if not 0 < alpha < 0.5:
        raise ConfigError("--alpha must be between 0 and 0.5")
    if not 0 < margin < 1:
        raise ConfigError("--margin must be between 0 and 1 (0.05 is 5 points)")


# --------------------------------------------------------------------------- per model


def _mean(values: Iterable[float | int | None]) -> float | None:
    present = [float(v) for v in values if v is not None]
    return sum(present) / len(present) if present else None


def _by_question(records: Iterable[ScoreRecord]) -> dict[str, list[ScoreRecord]]:
    grouped: dict[str, list[ScoreRecord]] = defaultdict(list)
    for record in records:
        grouped[record.item_id].append(record)
    return grouped


def model_result(model: str, records: Sequence[ScoreRecord]) -> ModelResult:
    """One model's results on one benchmark. Server errors count in `errors` only."""
    scored = [r for r in records if r.status != SERVER_ERROR]
    errors = len(records) - len(scored)
    n = len(scored)
    correct = sum(r.correct for r in scored)
    kept = [r for r in scored if not r.truncated]
    per_question = _by_question(scored)
    samples = max((len(rs) for rs in per_question.values()), default=1)
    result = ModelResult(
        model=model,
        n=n,
        correct=correct,
        accuracy=correct / n if n else None,
        ci95=wilson_interval(correct, n) if n else None,
        ci95_method="wilson" if n else None,
        truncated=sum(r.truncated for r in scored),
        no_answer=sum(r.status in NO_ANSWER_STATUSES for r in scored),
        errors=errors,
        n_excluding_truncated=len(kept),
        accuracy_excluding_truncated=sum(r.correct for r in kept) / len(kept) if kept else None,
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


# --------------------------------------------------------------------------- pairs


def _first_sample_outcomes(records: Sequence[ScoreRecord]) -> dict[str, bool]:
    """Per question, the outcome of its first answered sample. With K > 1 the paired tests
    use one answer per question, which keeps McNemar's independence across questions."""
    chosen: dict[str, ScoreRecord] = {}
    for record in records:
        if record.status == SERVER_ERROR:
            continue
        current = chosen.get(record.item_id)
        if current is None or record.sample < current.sample:
            chosen[record.item_id] = record
    return {item: record.correct for item, record in chosen.items()}


def _pair_power(table: PairedTable, observed_diff: float, alpha: float, margin: float) -> PairPower:
    discordance = table.flips
    # The difference a reader wants sized: the one observed, unless it is below a point
    # (then the equivalence margin).
    delta = abs(observed_diff) if abs(observed_diff) >= 0.01 else margin
    n_needed = (
        paired_sample_size(delta, discordance, alpha, TARGET_POWER) if discordance >= delta else None
    )
    return PairPower(
        discordance=discordance,
        alpha=alpha,
        power=TARGET_POWER,
        mde=paired_mde(table.n, discordance, alpha, TARGET_POWER) if discordance > 0 else None,
        delta=delta,
        n_needed=n_needed,
    )


def paired_result(
    a: str,
    b: str,
    outcomes_a: dict[str, bool],
    outcomes_b: dict[str, bool],
    result_a: ModelResult,
    result_b: ModelResult,
    alpha: float,
    margin: float,
) -> PairResult | None:
    shared = sorted(set(outcomes_a) & set(outcomes_b))
    if not shared:
        return None
    table = paired_table([outcomes_a[q] for q in shared], [outcomes_b[q] for q in shared])
    equivalence = equivalence_tost(table, margin, alpha)
    independent = independent_tests(result_a.correct, result_a.n, result_b.correct, result_b.n)
    return PairResult(
        a=a,
        b=b,
        n=table.n,
        both_correct=table.both,
        a_only=table.a_only,
        b_only=table.b_only,
        neither_correct=table.neither,
        accuracy_a=(table.both + table.a_only) / table.n,
        accuracy_b=(table.both + table.b_only) / table.n,
        diff=table.diff,
        diff_ci95=tango_interval(table, 0.95),
        diff_ci_method="tango",
        mcnemar_exact_p=mcnemar_exact_p(table.a_only, table.b_only),
        mcnemar_midp_p=mcnemar_midp_p(table.a_only, table.b_only),
        flips=table.flips,
        agreement=table.agreement,
        correlation=phi_correlation(table),
        equivalence_margin=margin,
        equivalence_ci90=equivalence.interval,
        equivalent=equivalence.equivalent,
        verdict="inconclusive",  # decided after the Holm adjustment
        sentence="",
        power=_pair_power(table, table.diff, alpha, margin),
        z_test_p=independent.z_test_p,
        chi2_p=independent.chi2_p,
        chi2_yates_p=independent.chi2_yates_p,
        fisher_p=independent.fisher_p,
    )


def pass_rates(records: Sequence[ScoreRecord]) -> dict[str, float]:
    """Per question, the share of its answered samples that were right."""
    grouped = _by_question(r for r in records if r.status != SERVER_ERROR)
    return {item: sum(r.correct for r in rs) / len(rs) for item, rs in grouped.items()}


def _add_all_samples_diff(pair: PairResult, records_a: Sequence[ScoreRecord], records_b: Sequence[ScoreRecord]) -> None:
    rates_a, rates_b = pass_rates(records_a), pass_rates(records_b)
    shared = sorted(set(rates_a) & set(rates_b))
    if len(shared) < 2:
        return
    result = clustered_paired_difference([rates_a[q] for q in shared], [rates_b[q] for q in shared])
    pair.diff_all_samples = result.diff
    pair.diff_all_samples_ci95 = result.ci
    pair.samples = max(len(rs) for rs in _by_question(records_a).values())


def _adjust_and_judge(pairs: list[PairResult], label: str, alpha: float) -> None:
    for pair, adjusted, adjusted_exact in zip(
        pairs,
        holm([p.mcnemar_midp_p for p in pairs]),
        holm([p.mcnemar_exact_p for p in pairs]),
    ):
        pair.p_holm = adjusted
        pair.p_holm_exact = adjusted_exact
        pair.verdict = _verdict(pair, alpha)
        pair.sentence = pair_sentence(pair, label, several=len(pairs) > 1)


def _verdict(pair: PairResult, alpha: float) -> str:
    significant = pair.p_holm is not None and pair.p_holm < alpha
    if significant:
        return "small_difference" if pair.equivalent else "difference"
    return "equivalent" if pair.equivalent else "inconclusive"


# --------------------------------------------------------------------------- sentences


def points(value: float, signed: bool = True) -> str:
    return f"{value * 100:+.1f}" if signed else f"{value * 100:.1f}"


def format_p(p: float | None) -> str:
    if p is None:
        return "n/a"
    if p < 0.001:
        return "<0.001"
    return f"{p:.3f}"


def _interval_text(interval: Interval | None) -> str:
    if interval is None:
        return ""
    return f" [{points(interval[0])}, {points(interval[1])}]"


def pair_sentence(pair: PairResult, label: str, *, several: bool) -> str:
    """One plain-language sentence. A non-significant difference is never called "no
    difference": it is either shown equivalent within the margin, or undecided."""
    sentence = _paired_sentence(pair, label, several=several)
    if pair.diff_all_samples is not None:
        sentence += (
            f" (first sample per question; over all {pair.samples} samples: "
            f"{points(pair.diff_all_samples)} points{_interval_text(pair.diff_all_samples_ci95)})"
        )
    return sentence


def _paired_sentence(pair: PairResult, label: str, *, several: bool) -> str:
    head = f"{pair.a} vs {pair.b}, {label}: {points(pair.diff)} points{_interval_text(pair.diff_ci95)}"
    margin = f"±{pair.equivalence_margin * 100:g} points"
    tests = f"McNemar mid-p {format_p(pair.mcnemar_midp_p)}"
    if several:
        tests += f", Holm {format_p(pair.p_holm)}"
    if pair.verdict == "difference":
        return f"{head}, {tests} — likely a real difference"
    if pair.verdict == "small_difference":
        return f"{head}, {tests} — likely a real difference, but within {margin}"
    if pair.verdict == "equivalent":
        return f"{head}, {tests} — equivalent within {margin}"
    tail = f"not distinguishable at {pair.n} questions"
    if pair.flips == 0:
        return f"{head}, {tests} — {tail}: the models agreed on every question, too few to show equivalence within {margin}"
    power = pair.power
    if power is not None and power.n_needed is not None:
        tail += (
            f"; about {_round_up(power.n_needed)} would be needed to detect "
            f"{power.delta * 100:.1f} points at this disagreement rate"
        )
    return f"{head}, {tests} — {tail}"


def _round_up(n: int) -> int:
    """Sample sizes are estimates: show two significant figures, rounded up."""
    if n < 100:
        return n
    scale = 10 ** (len(str(n)) - 2)
    return math.ceil(n / scale) * scale


# --------------------------------------------------------------------------- benchmarks


def benchmark_report(
    benchmark: str,
    models: Sequence[str],
    records: Sequence[ScoreRecord],
    *,
    reference: str | None,
    alpha: float,
    margin: float,
) -> BenchmarkReport:
    label = BENCHMARK_LABELS.get(benchmark, benchmark)
    by_model: dict[str, list[ScoreRecord]] = defaultdict(list)
    for record in records:
        by_model[record.model].append(record)
    present = [m for m in models if by_model.get(m)]
    results = {m: model_result(m, by_model[m]) for m in present}
    outcomes = {m: _first_sample_outcomes(by_model[m]) for m in present}
    pairs: list[PairResult] = []
    for a, b in comparison_pairs(present, reference if reference in present else None):
        pair = paired_result(a, b, outcomes[a], outcomes[b], results[a], results[b], alpha, margin)
        if pair is not None:
            if max(results[a].samples, results[b].samples) > 1:
                _add_all_samples_diff(pair, by_model[a], by_model[b])
            pairs.append(pair)
    _adjust_and_judge(pairs, label, alpha)
    report = BenchmarkReport(
        benchmark=benchmark,
        label=label,
        samples=max((r.samples for r in results.values()), default=1),
        models=[results[m] for m in present],
        pairs=pairs,
        cochran_q=_cochran(present, outcomes),
        truncation_warning=truncation_warning(label, list(results.values())),
    )
    _add_categories(report, present, by_model, outcomes, reference, alpha)
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


def truncation_warning(label: str, results: Sequence[ModelResult]) -> str | None:
    counted = [r for r in results if r.truncated is not None and r.n]
    if len(counted) < 2:
        return None
    rates = {r.model: r.truncated / r.n for r in counted}
    most = max(counted, key=lambda r: rates[r.model])
    least = min(counted, key=lambda r: rates[r.model])
    gap_count = abs(most.truncated - least.truncated)
    if gap_count < TRUNCATION_WARN_COUNT or rates[most.model] - rates[least.model] < TRUNCATION_WARN_SHARE:
        return None
    listing = ", ".join(f"{r.model} {r.truncated}/{r.n}" for r in counted)
    return (
        f"{label}: truncation differs between models ({listing} answers hit the token budget). "
        "A variant that thinks longer can lose by running out of budget, not by knowing less: "
        "compare the accuracy without truncated answers, or re-run with a larger max_tokens."
    )


def _add_categories(
    report: BenchmarkReport,
    models: Sequence[str],
    by_model: dict[str, list[ScoreRecord]],
    outcomes: dict[str, dict[str, bool]],
    reference: str | None,
    alpha: float,
) -> None:
    category_of: dict[str, str] = {}
    for model in models:
        for record in by_model[model]:
            if record.category:
                category_of[record.item_id] = record.category
    if not category_of or not models:
        return
    shared = set.intersection(*(set(outcomes[m]) for m in models))
    sizes: dict[str, list[str]] = defaultdict(list)
    for item in sorted(shared):
        if item in category_of:
            sizes[category_of[item]].append(item)
    large = {c: items for c, items in sizes.items() if len(items) >= MIN_CATEGORY_QUESTIONS}
    for category in sorted(large):
        report.categories.append(_category_result(category, large[category], models, outcomes, reference))
    biggest = max((len(v) for v in sizes.values()), default=0)
    if not large:
        report.categories_note = (
            f"Per-category results are left out: {len(sizes)} categories, the largest with "
            f"{biggest} questions; at least {MIN_CATEGORY_QUESTIONS} per category are needed to "
            "say anything about a category."
        )
    elif len(large) < len(sizes):
        report.categories_note = (
            f"Only categories with at least {MIN_CATEGORY_QUESTIONS} questions are shown "
            f"({len(large)} of {len(sizes)})."
        )


def _category_result(
    category: str,
    items: list[str],
    models: Sequence[str],
    outcomes: dict[str, dict[str, bool]],
    reference: str | None,
) -> CategoryResult:
    n = len(items)
    per_model = []
    for model in models:
        correct = sum(outcomes[model][q] for q in items)
        per_model.append(
            CategoryModel(model=model, n=n, correct=correct, accuracy=correct / n, ci95=wilson_interval(correct, n))
        )
    pairs = []
    for a, b in comparison_pairs(models, reference if reference in models else None):
        table = paired_table([outcomes[a][q] for q in items], [outcomes[b][q] for q in items])
        pairs.append(
            CategoryPair(
                a=a,
                b=b,
                n=n,
                diff=table.diff,
                diff_ci95=tango_interval(table),
                mcnemar_midp_p=mcnemar_midp_p(table.a_only, table.b_only),
            )
        )
    return CategoryResult(category=category, n=n, models=per_model, pairs=pairs)


def _add_notes(report: BenchmarkReport, results: Sequence[ModelResult]) -> None:
    errors = sum(r.errors or 0 for r in results)
    if errors:
        report.notes.append(
            f"{errors} requests got no answer from the server (server_error): they are counted "
            "in `errors` and left out of accuracy and of the paired comparisons."
        )
    if report.samples > 1:
        report.notes.append(
            f"{report.samples} answers per question: accuracy intervals are clustered by "
            "question; the paired tests use each question's first answered sample."
        )
    if report.pairs:
        report.notes.append(
            "Paired statistics use only the questions both models answered; p_holm adjusts "
            "the McNemar mid-p values for the number of pairs in this benchmark (Holm)."
        )


# --------------------------------------------------------------------------- a run


def build_report_from_scores(
    scores: Sequence[ScoreRecord],
    *,
    models: Sequence[str] | None = None,
    benchmarks: Sequence[str] | None = None,
    source: str = "",
    reference: str | None = None,
    alpha: float = 0.05,
    margin: float = 0.05,
) -> Report:
    """The typed report from scores (no IO). Model and benchmark order default to the order
    of first appearance."""
    _check_levels(alpha, margin)
    order = list(models) if models else list(dict.fromkeys(r.model for r in scores))
    order += [m for m in dict.fromkeys(r.model for r in scores) if m not in order]
    if reference is not None and reference not in order:
        raise ConfigError(f"--reference {reference}: not a model of this run (models: {', '.join(order)})")
    wanted = list(benchmarks) if benchmarks else list(dict.fromkeys(r.benchmark for r in scores))
    by_benchmark: dict[str, list[ScoreRecord]] = defaultdict(list)
    for record in scores:
        by_benchmark[record.benchmark].append(record)
    reports = [
        benchmark_report(name, order, by_benchmark[name], reference=reference, alpha=alpha, margin=margin)
        for name in wanted
        if by_benchmark.get(name)
    ]
    if not reports:
        raise DataError(f"{source or 'the run'}: no scored answers to report on")
    report = Report(
        kind="run",
        source=source,
        created_at=utcnow(),
        alpha=alpha,
        margin=margin,
        reference=reference,
        models=order,
        benchmarks=reports,
    )
    report.warnings = [b.truncation_warning for b in reports if b.truncation_warning]
    return report


def _scores_for(run: RunDir) -> list[ScoreRecord]:
    """Scores, computed first if scores.jsonl is missing or stale."""
    from qatcmp.scoring import ensure_scores  # the score stage pulls in the sandbox: load late

    return ensure_scores(run, mode=None)  # keep the extraction mode the user scored with


def build_report(
    run_dir: str | Path,
    *,
    reference: str | None = None,
    alpha: float = 0.05,
    margin: float = 0.05,
) -> Report:
    """Score the run if needed, then write report.json, report.md and the plots into it."""
    report = report_for_run(run_dir, reference=reference, alpha=alpha, margin=margin)
    write_report(report, Path(run_dir))
    return report


def report_for_run(
    run_dir: str | Path,
    *,
    scores: Sequence[ScoreRecord] | None = None,
    reference: str | None = None,
    alpha: float = 0.05,
    margin: float = 0.05,
) -> Report:
    """The report of a run folder (scored first if needed), without writing anything."""
    run = RunDir(run_dir)
    manifest = run.read_manifest()
    return build_report_from_scores(
        list(scores) if scores is not None else _scores_for(run),
        models=list(manifest.spec.models),
        benchmarks=[b.name for b in manifest.spec.benchmarks],
        source=str(run.path),
        reference=reference,
        alpha=alpha,
        margin=margin,
    )


def write_report(report: Report, folder: Path) -> None:
    from qatcmp.plots import write_plots

    folder.mkdir(parents=True, exist_ok=True)
    report.plots = write_plots(report, folder)
    write_json_atomic(folder / "report.json", report.model_dump(mode="json"))
    write_text_atomic(folder / "report.md", render_markdown(report))


# --------------------------------------------------------------------------- totals only

_COUNT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._+-]*)\s*=\s*(\d+)\s*/\s*(\d+)\s*$")


def parse_counts(spec: str) -> dict[str, list[tuple[str, int, int]]]:
    """'humaneval:6bit=98/100,qat8=90/100;mmlu_pro:6bit=29/50,...' -> per benchmark, the
    (model, correct, total) triples in the order given."""
    parsed: dict[str, list[tuple[str, int, int]]] = {}
    for part in filter(None, (p.strip() for p in spec.split(";"))):
        name, sep, rest = part.partition(":")
        name = name.strip()
        if not sep or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
            raise ConfigError(f"--counts: '{part}' should look like 'humaneval:6bit=98/100,qat8=90/100'")
        entries = []
        for entry in filter(None, (e.strip() for e in rest.split(","))):
            match = _COUNT.match(entry)
            if not match:
                raise ConfigError(f"--counts: '{entry}' should look like 'MODEL=CORRECT/TOTAL'")
            model, correct, total = match.group(1), int(match.group(2)), int(match.group(3))
            if total == 0 or correct > total:
                raise ConfigError(f"--counts: {entry}: correct must be between 0 and a total above 0")
            if any(m == model for m, _, _ in entries):
                raise ConfigError(f"--counts: {name}: model {model} is given twice")
            entries.append((model, correct, total))
        if len(entries) < 1:
            raise ConfigError(f"--counts: {name}: no MODEL=CORRECT/TOTAL entries")
        if name in parsed:
            raise ConfigError(f"--counts: benchmark {name} is given twice")
        parsed[name] = entries
    if not parsed:
        raise ConfigError("--counts: nothing to compare")
    return parsed


def paired_range_text(correct_a: int, correct_b: int, n: int) -> str | None:
    """What the pairing could show for two totals on the same n questions: the McNemar mid-p
    depends on how many questions the models disagree on, which totals do not tell."""
    gap = correct_a - correct_b
    if gap == 0:
        return None
    lo_b = abs(gap)
    # a_only - b_only = gap; a_only <= min(correct_a, n - correct_b) etc.
    most_b_only = min(correct_b, n - correct_a) if gap > 0 else min(correct_a, n - correct_b)
    fewest = (lo_b, 0)
    most = (lo_b + most_b_only, most_b_only)
    p_fewest = mcnemar_midp_p(*fewest)
    p_most = mcnemar_midp_p(*most)
    return (
        f"with per-question data the paired McNemar mid-p would be between {format_p(p_fewest)} "
        f"and {format_p(p_most)}, depending on how many questions the models disagreed on "
        f"({fewest[0]} to {most[0] + most[1]})"
    )


def build_counts_report(
    spec: str, *, reference: str | None = None, alpha: float = 0.05, margin: float = 0.05
) -> Report:
    _check_levels(alpha, margin)
    parsed = parse_counts(spec)
    models = list(dict.fromkeys(m for entries in parsed.values() for m, _, _ in entries))
    if reference is not None and reference not in models:
        raise ConfigError(f"--reference {reference}: not in --counts (models: {', '.join(models)})")
    benchmarks = []
    notes = [
        "Totals only: each model's Wilson interval and the independent-sample tests. With "
        "per-question outcomes (which questions each model got right) qatcmp would use the "
        "pairing — McNemar on the questions where the models disagree, an interval for the "
        "paired difference, and an equivalence verdict — which is usually far more sensitive, "
        "because questions both models get right (or both wrong) cancel out."
    ]
    for name, entries in parsed.items():
        label = BENCHMARK_LABELS.get(name, name)
        results = [
            ModelResult(model=m, n=t, correct=c, accuracy=c / t, ci95=wilson_interval(c, t))
            for m, c, t in entries
        ]
        pairs = []
        by_name = {r.model: r for r in results}
        names = [r.model for r in results]
        for a, b in comparison_pairs(names, reference if reference in names else None):
            ra, rb = by_name[a], by_name[b]
            tests = independent_tests(ra.correct, ra.n, rb.correct, rb.n)
            diff = ra.correct / ra.n - rb.correct / rb.n
            sentence = (
                f"{a} vs {b}, {label}: {points(diff)} points ({ra.correct}/{ra.n} vs "
                f"{rb.correct}/{rb.n}), z-test p {format_p(tests.z_test_p)}, Fisher "
                f"{format_p(tests.fisher_p)} — ignoring that both answered the same questions"
            )
            if ra.n == rb.n:
                paired = paired_range_text(ra.correct, rb.correct, ra.n)
                if paired:
                    sentence += f"; {paired}"
            pairs.append(
                PairResult(
                    a=a,
                    b=b,
                    n=None,
                    diff=diff,
                    equivalence_margin=margin,
                    verdict="unpaired",
                    sentence=sentence,
                    z_test_p=tests.z_test_p,
                    chi2_p=tests.chi2_p,
                    chi2_yates_p=tests.chi2_yates_p,
                    fisher_p=tests.fisher_p,
                )
            )
        benchmarks.append(BenchmarkReport(benchmark=name, label=label, models=results, pairs=pairs))
    return Report(
        kind="counts",
        source=spec,
        created_at=utcnow(),
        alpha=alpha,
        margin=margin,
        reference=reference,
        models=models,
        benchmarks=benchmarks,
        notes=notes,
    )


# --------------------------------------------------------------------------- rendering


def format_summary(report: Report) -> str:
    """The plain-language sentences per pair, warnings first, for the terminal."""
    lines = [f"WARNING: {w}" for w in report.warnings]
    for bench in report.benchmarks:
        lines.extend(pair.sentence for pair in bench.pairs)
        if bench.cochran_q is not None:
            q = bench.cochran_q
            lines.append(
                f"{bench.label}, all {len(bench.models)} models: Cochran's Q {q.statistic:.2f} "
                f"(df {q.df}), p {format_p(q.p)}"
            )
    lines.extend(report.notes)
    return "\n".join(lines)


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"


def _ci(interval: Interval | None, signed: bool = False) -> str:
    if interval is None:
        return "—"
    if signed:
        return f"[{points(interval[0])}, {points(interval[1])}]"
    return f"[{interval[0] * 100:.1f}, {interval[1] * 100:.1f}]"


def _num(value: float | int | None, digits: int = 0) -> str:
    if value is None:
        return "—"
    return f"{value:,.{digits}f}"


def _row(cells: Iterable[object]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> list[str]:
    return [_row(header), _row("---" for _ in header), *(_row(r) for r in rows)]


def _overview(report: Report) -> list[str]:
    """The motivating post's table (model x benchmark, accuracy with correct/total), with
    each benchmark's interval and truncation count next to it."""
    header = ["model"]
    for bench in report.benchmarks:
        header += [bench.label, "95% CI", "truncated"]
    rows = []
    for model in report.models:
        cells: list[object] = [model]
        for bench in report.benchmarks:
            found = next((r for r in bench.models if r.model == model), None)
            if found is None or found.accuracy is None:
                cells += ["—", "—", "—"]
                continue
            cells += [
                f"{_pct(found.accuracy)} ({found.correct}/{found.n})",
                _ci(found.ci95),
                "—" if found.truncated is None else found.truncated,
            ]
        rows.append(cells)
    return _table(header, rows)


def _model_rows(bench: BenchmarkReport, kind: str) -> list[str]:
    if kind == "counts":
        return _table(
            ["model", "accuracy", "correct/total", "95% CI (Wilson)"],
            [[r.model, _pct(r.accuracy), f"{r.correct}/{r.n}", _ci(r.ci95)] for r in bench.models],
        )
    header = [
        "model", "accuracy", "correct/total", "95% CI", "truncated", "no answer", "errors",
        "accuracy w/o truncated", "mean tokens", "mean reasoning chars", "mean latency (s)",
    ]
    rows = [
        [
            r.model, _pct(r.accuracy), f"{r.correct}/{r.n}", _ci(r.ci95), r.truncated, r.no_answer,
            r.errors, f"{_pct(r.accuracy_excluding_truncated)} ({r.n_excluding_truncated})",
            _num(r.mean_completion_tokens), _num(r.mean_reasoning_chars), _num(r.mean_latency_s, 1),
        ]
        for r in bench.models
    ]
    lines = _table(header, rows)
    if bench.samples > 1:
        lines += ["", *_table(
            ["model", "clustered SE", "pass@k"],
            [
                [r.model, _num(r.clustered_se, 4),
                 ", ".join(f"pass@{k} {_pct(v)}" for k, v in (r.pass_at_k or {}).items())]
                for r in bench.models
            ],
        )]
    return lines


def _pair_rows(bench: BenchmarkReport, margin: float) -> list[str]:
    header = [
        "A vs B", "n", "A only", "B only", "diff (points)", "95% CI (Tango)", "McNemar exact",
        "mid-p", "Holm", "flips", f"equivalent ±{margin * 100:g}", "MDE (80% power)", "verdict",
    ]
    rows = [
        [
            f"{p.a} vs {p.b}", p.n, p.a_only, p.b_only, points(p.diff), _ci(p.diff_ci95, signed=True),
            format_p(p.mcnemar_exact_p), format_p(p.mcnemar_midp_p), format_p(p.p_holm),
            _pct(p.flips), "yes" if p.equivalent else "no",
            "—" if p.power is None or p.power.mde is None else f"{p.power.mde * 100:.1f} points",
            p.verdict.replace("_", " "),
        ]
        for p in bench.pairs
    ]
    lines = _table(header, rows)
    clustered = [p for p in bench.pairs if p.diff_all_samples is not None]
    if clustered:
        lines += ["", f"Over all {bench.samples} samples per question (clustered by question):", "", *_table(
            ["A vs B", "diff (points)", "95% CI"],
            [[f"{p.a} vs {p.b}", points(p.diff_all_samples), _ci(p.diff_all_samples_ci95, signed=True)] for p in clustered],
        )]
    return lines


def _independent_rows(bench: BenchmarkReport) -> list[str]:
    return _table(
        ["A vs B", "diff (points)", "z-test p", "chi² p", "chi² Yates p", "Fisher p"],
        [
            [f"{p.a} vs {p.b}", points(p.diff), format_p(p.z_test_p), format_p(p.chi2_p),
             format_p(p.chi2_yates_p), format_p(p.fisher_p)]
            for p in bench.pairs
        ],
    )


def _category_rows(bench: BenchmarkReport) -> list[str]:
    models = [m.model for m in bench.models]
    header = ["category", "n", *models]
    rows = [
        [c.category, c.n, *(f"{_pct(m.accuracy)} {_ci(m.ci95)}" for m in c.models)]
        for c in bench.categories
    ]
    lines = _table(header, rows)
    pair_rows = [
        [c.category, f"{p.a} vs {p.b}", points(p.diff), _ci(p.diff_ci95, signed=True), format_p(p.mcnemar_midp_p)]
        for c in bench.categories
        for p in c.pairs
    ]
    return lines + ["", *_table(["category", "A vs B", "diff", "95% CI", "mid-p"], pair_rows)]


def render_markdown(report: Report) -> str:
    title = "qatcmp report" + (f": {Path(report.source).name}" if report.kind == "run" else " (totals only)")
    out = [f"# {title}", ""]
    for warning in report.warnings:
        out += [f"> **⚠ Warning:** {warning}", ""]
    out += ["## Summary", ""]
    out += [f"- {p.sentence}" for b in report.benchmarks for p in b.pairs] or ["- (one model: nothing to compare)"]
    out += ["", *(f"{n}" for n in report.notes), ""] if report.notes else [""]
    out += ["## Accuracy", "", *_overview(report), ""]
    if "accuracy.png" in report.plots:
        out += ["![Accuracy per model with 95% intervals](accuracy.png)", ""]
    for bench in report.benchmarks:
        out += [f"## {bench.label}", ""]
        if bench.truncation_warning:
            out += [f"> **⚠ Warning:** {bench.truncation_warning}", ""]
        out += ["### Per model", "", *_model_rows(bench, report.kind), ""]
        if report.kind == "run" and bench.pairs:
            scope = f"each variant against {report.reference}" if report.reference else "every pair"
            out += [f"### Paired comparisons ({scope}, questions both answered)", "", *_pair_rows(bench, report.margin), ""]
            out += _power_lines(bench)
        if bench.pairs:
            out += ["### Independent-sample tests (ignore the pairing)", "", INDEPENDENT_NOTE, "", *_independent_rows(bench), ""]
        if bench.cochran_q is not None:
            q = bench.cochran_q
            out += [
                f"Cochran's Q over all {len(bench.models)} models ({q.n} questions all answered): "
                f"Q = {q.statistic:.2f}, df = {q.df}, p = {format_p(q.p)}.", "",
            ]
        if bench.categories:
            out += ["### Per category", "", *_category_rows(bench), ""]
            out += ["Per-category p-values are not adjusted for the number of categories: read them as descriptive.", ""]
        if bench.categories_note:
            out += [bench.categories_note, ""]
        out += [f"- {n}" for n in bench.notes] + ([""] if bench.notes else [])
    if "differences.png" in report.plots:
        out += ["## Paired differences", "", "![Paired differences with 95% Tango intervals](differences.png)", ""]
    out += [
        "---",
        f"qatcmp {report.qatcmp_version}, report schema {report.schema_version}; "
        f"alpha {report.alpha}, equivalence margin ±{report.margin * 100:g} points, power {report.target_power}.",
        "",
    ]
    return "\n".join(out)


def _power_lines(bench: BenchmarkReport) -> list[str]:
    lines = []
    for pair in bench.pairs:
        power = pair.power
        if power is None:
            continue
        mde = (
            "none (not even if every disagreement went one way)"
            if power.mde is None
            else f"{power.mde * 100:.1f} points"
        )
        needed = (
            f"{power.n_needed} questions would detect {power.delta * 100:.1f} points"
            if power.n_needed is not None
            else f"too few disagreements to size a study for {power.delta * 100:.1f} points"
        )
        lines.append(
            f"- {pair.a} vs {pair.b}: the models disagree on {_pct(power.discordance)} of questions; "
            f"with {pair.n} questions the smallest difference detectable with "
            f"{power.power:.0%} power is {mde}; {needed}."
        )
    if not lines:
        return []
    return ["Power (paired design, Connor 1987, two-sided):", "", *lines, ""]
