"""Scores → the report model. Picks what to compare (every pair, or each variant against a
reference), counts outcomes the way docs/report-schema.md documents, and calls the pure
statistics in qatcmp.stats. No file is written here (see write.py)."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from itertools import combinations
from pathlib import Path

from qatcmp.errors import ConfigError, DataError
from qatcmp.records import ScoreRecord, utcnow
from qatcmp.report.model import (
    BENCHMARK_LABELS,
    TARGET_POWER,
    BenchmarkReport,
    CategoryModel,
    CategoryPair,
    CategoryResult,
    CochranQResult,
    ModelResult,
    PairPower,
    PairResult,
    Report,
)
from qatcmp.report.wording import pair_sentence, truncation_warning
from qatcmp.rundir import RunDir
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

# Per-category results need hundreds of questions per category to say anything; below this
# they are left out with a note rather than shown as noise.
MIN_CATEGORY_QUESTIONS = 100
NO_ANSWER_STATUSES = {"no_answer", "no_code"}
SERVER_ERROR = "server_error"


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
    from qatcmp.report.write import write_report

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
