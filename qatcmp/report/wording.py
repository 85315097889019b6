"""The report's words and number formats: the sentence per pair, warnings, and the cell
formats every renderer shares. Pure functions over the report model."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from qatcmp.report.model import BenchmarkReport, Interval, ModelResult, PairResult, Report

# Truncation counts that differ by at least this many answers and this share of n get a
# warning: a chattier variant can lose by hitting the budget.
TRUNCATION_WARN_COUNT = 2
TRUNCATION_WARN_SHARE = 0.01


def points(value: float, signed: bool = True) -> str:
    return f"{value * 100:+.1f}" if signed else f"{value * 100:.1f}"


def format_p(p: float | None) -> str:
    """A p-value for a table cell: '0.012', '<0.001'."""
    if p is None:
        return "n/a"
    if p < 0.001:
        return "<0.001"
    return f"{p:.3f}"


def p_is(p: float | None) -> str:
    """A p-value in a sentence: '= 0.012', '< 0.001'."""
    if p is None:
        return "n/a"
    if p < 0.001:
        return "< 0.001"
    return f"= {p:.3f}"


def confidence_text(confidence: float | None) -> str:
    """0.95 -> '95%', 0.98333 -> '98.3%'."""
    if confidence is None:
        return "?"
    rounded = round(100 * confidence, 1)
    return f"{rounded:.0f}%" if rounded == round(rounded) else f"{rounded:.1f}%"


def interval_text(interval: Interval | None) -> str:
    if interval is None:
        return ""
    return f"[{points(interval[0])}, {points(interval[1])}]"


def _interval_text(interval: Interval | None) -> str:
    return f" {interval_text(interval)}" if interval is not None else ""


def margin_text(margin: float) -> str:
    return f"±{margin * 100:g} points"


VERDICT_WORDS = {
    "difference": "likely a real difference",
    "small_difference": "likely a real difference, within the margin",
    "equivalent": "equivalent within the margin",
    "inconclusive": "not distinguishable",
    "unpaired": "totals only",
}


def pair_sentence(pair: PairResult, label: str, *, pairs: int = 1, several: bool | None = None) -> str:
    """One plain-language sentence. The interval printed is the one the verdict rests on
    (Holm-compatible with several pairs), the equivalence margin is always named, and a
    non-significant difference is never called "no difference": it is either shown
    equivalent within the margin, or undecided."""
    if several is not None:  # the old keyword: two pairs stand for "several"
        pairs = max(pairs, 2 if several else 1)
    sentence = _paired_sentence(pair, label, pairs=pairs)
    if pair.diff_all_samples is not None:
        sentence += (
            f" (first sample per question; over all {pair.samples} samples: "
            f"{points(pair.diff_all_samples)} points{_interval_text(pair.diff_all_samples_ci95)})"
        )
    return sentence


def _adjusted(pairs: int) -> str:
    return f", Holm-adjusted for {pairs} pairs" if pairs > 1 else ""


def _paired_sentence(pair: PairResult, label: str, *, pairs: int) -> str:
    head = f"{pair.a} vs {pair.b}, {label}: {points(pair.diff)} points"
    if pair.diff_ci_holm is not None:
        head += f" ({confidence_text(pair.diff_ci_holm_confidence)} CI {interval_text(pair.diff_ci_holm)}{_adjusted(pairs)})"
    if pair.interval_test_disagree:
        # Tango's score interval and the mid-p test differ in a narrow band near the boundary:
        # say which decides rather than print an interval that seems to contradict the verdict.
        if pair.verdict in ("difference", "small_difference"):
            head += "; the interval, by Tango's method, just includes 0, but the mid-p test, which decides, rejects"
        else:
            head += "; the interval, by Tango's method, just excludes 0, but the mid-p test, which decides, does not reject"
    margin = margin_text(pair.equivalence_margin)
    tests = f"McNemar mid-p {p_is(pair.mcnemar_midp_p)}"
    if pairs > 1:
        tests += f", Holm-adjusted p {p_is(pair.p_holm)}"
    equivalence = (
        f"({confidence_text(pair.equivalence_ci_holm_confidence)} CI {interval_text(pair.equivalence_ci_holm)}"
        f"{_adjusted(pairs)})"
    )
    if pair.verdict == "difference":
        return f"{head}, {tests} — likely a real difference, not shown to be within {margin}"
    if pair.verdict == "small_difference":
        return f"{head}, {tests} — likely a real difference, but within {margin} {equivalence}"
    if pair.verdict == "equivalent":
        return f"{head}, {tests} — equivalent within {margin} {equivalence}"
    tail = f"not distinguishable at {pair.n} questions"
    if pair.flips == 0:
        return f"{head}, {tests} — {tail}: the models agreed on every question, too few to show equivalence within {margin}"
    tail += f", and not shown to be within {margin}"
    power = pair.power
    if power is not None and power.n_needed is not None:
        named = "the equivalence margin" if power.delta_source == "margin" else "--delta"
        tail += (
            f"; about {_round_up(power.n_needed)} questions would detect a difference of "
            f"{power.delta * 100:g} points ({named}) with {power.power:.0%} power at this disagreement rate"
        )
    return f"{head}, {tests} — {tail}"


def _round_up(n: int) -> int:
    """Sample sizes are estimates: show two significant figures, rounded up."""
    if n < 100:
        return n
    scale = 10 ** (len(str(n)) - 2)
    return math.ceil(n / scale) * scale


def _budgets(models: Sequence[str], max_tokens: Mapping[str, int | None] | None) -> dict[str, int | None]:
    return {m: (max_tokens or {}).get(m) for m in models}


def _different_budgets(budgets: Mapping[str, int | None]) -> bool:
    return len({b for b in budgets.values()}) > 1


def _budget_listing(budgets: Mapping[str, int | None]) -> str:
    return ", ".join(f"{m} {'not set' if b is None else b}" for m, b in budgets.items())


def truncation_warning(
    label: str, results: Sequence[ModelResult], max_tokens: Mapping[str, int | None] | None = None
) -> str | None:
    """Truncation that differs between models. When the variants were given different
    max_tokens, that is the first suspect, and the warning says so."""
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
    head = f"{label}: truncation differs between models ({listing} answers hit the token budget). "
    budgets = _budgets([r.model for r in counted], max_tokens)
    if max_tokens is not None and _different_budgets(budgets):
        return head + (
            f"The variants were given different max_tokens ({_budget_listing(budgets)}): the "
            "difference may come from the budgets, not the models. Re-run with the same max_tokens."
        )
    return head + (
        "A variant that thinks longer can lose by running out of budget, not by knowing less: "
        "compare the accuracy without truncated answers, or re-run with a larger max_tokens."
    )


def all_truncated_warnings(bench: BenchmarkReport, max_tokens: Mapping[str, int | None] | None) -> list[str]:
    """Every answer of a model cut off: its accuracy measures the token budget."""
    warnings = []
    for r in bench.models:
        if r.n and r.truncated == r.n:
            budget = (max_tokens or {}).get(r.model)
            given = f" (max_tokens {budget})" if budget is not None else ""
            warnings.append(
                f"{bench.label}: every answer of {r.model} hit the token budget{given}: its "
                "accuracy measures the budget, not the model. Re-run with a larger max_tokens."
            )
    return warnings


def budget_warning(report: Report) -> str | None:
    if report.setup is None:
        return None
    budgets = {v.model: v.max_tokens for v in report.setup.variants if v.model in report.models}
    if len(budgets) < 2 or not _different_budgets(budgets):
        return None
    return (
        f"The variants were given different max_tokens ({_budget_listing(budgets)}): a "
        "difference between them can come from the budget as much as from the model."
    )


def incomplete_line(report: Report, resume_hint: str | None) -> str | None:
    missing = sum(b.missing_answers for b in report.benchmarks)
    if not missing:
        return None
    noun = "answer" if missing == 1 else "answers"
    if resume_hint:
        return f"incomplete: {missing} {noun} missing — run `{resume_hint}` again"
    return f"incomplete: {missing} {noun} missing"


def unsafe_line(report: Report) -> str | None:
    sandbox = report.setup.sandbox if report.setup else None
    if sandbox is None or not sandbox.unsafe_no_isolation:
        return None
    if not any(b.benchmark == "humaneval" for b in report.benchmarks):
        return None
    return "HumanEval was scored without isolation (--unsafe-no-isolation): the model's code ran unconfined on this machine."


def run_warnings(report: Report, resume_hint: str | None) -> list[str]:
    """Everything to show prominently, most serious first; the run's own warnings too."""
    max_tokens = {v.model: v.max_tokens for v in report.setup.variants} if report.setup else None
    warnings = [w for w in (unsafe_line(report), incomplete_line(report, resume_hint)) if w]
    for bench in report.benchmarks:
        warnings += all_truncated_warnings(bench, max_tokens)
    budget = budget_warning(report)
    if budget:
        warnings.append(budget)
    warnings += [b.truncation_warning for b in report.benchmarks if b.truncation_warning]
    for bench in report.benchmarks:
        if bench.verdicts_differing_by_mode:
            warnings.append(
                f"{bench.label}: {bench.verdicts_differing_by_mode} of {len(bench.pairs)} verdicts change "
                f"with the extraction mode ({bench.extraction_mode} here, {bench.other_mode} also "
                "scored): those pairs are marked, with both results."
            )
    if report.setup is not None:
        warnings += [f"run: {w}" for w in report.setup.manifest_warnings]
    return warnings


def mode_difference_text(pair: PairResult, mode: str | None) -> str:
    other = pair.other_mode
    if other is None:
        return ""
    return (
        f" [verdict depends on the extraction mode: {mode or 'this mode'} says "
        f"{VERDICT_WORDS.get(pair.verdict, pair.verdict)}; {other.mode} says "
        f"{VERDICT_WORDS.get(other.verdict, other.verdict)}, {points(other.diff)} points"
        f"{_interval_text(other.diff_ci_holm)}, Holm-adjusted p {p_is(other.p_holm)}]"
    )


# --------------------------------------------------------------------------- cells


def pct(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"


def ci_text(interval: Interval | None, signed: bool = False) -> str:
    if interval is None:
        return "—"
    if signed:
        return f"[{points(interval[0])}, {points(interval[1])}]"
    return f"[{interval[0] * 100:.1f}, {interval[1] * 100:.1f}]"


def num(value: float | int | None, digits: int = 0) -> str:
    if value is None:
        return "—"
    return f"{value:,.{digits}f}"
