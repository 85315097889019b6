"""The report's words and number formats: the sentence per pair, warnings, and the cell
formats every renderer shares. Pure functions over the report model."""

from __future__ import annotations

import math
from collections.abc import Sequence

from qatcmp.report.model import Interval, ModelResult, PairResult

# Truncation counts that differ by at least this many answers and this share of n get a
# warning: a chattier variant can lose by hitting the budget.
TRUNCATION_WARN_COUNT = 2
TRUNCATION_WARN_SHARE = 0.01


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
