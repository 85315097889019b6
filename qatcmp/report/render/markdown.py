"""report.md: the report model as Markdown, and the terminal summary. Pure: Report → text."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import PurePath

from qatcmp.report.model import INDEPENDENT_NOTE, INDEPENDENT_NOTE_SAMPLES, BenchmarkReport, ModelResult, PairResult, Report
from qatcmp.report.render.adaptive import ADAPTIVE_PNG, adaptive_markdown, extension_markdown
from qatcmp.report.render.markdown_setup import header_lines, setup_section
from qatcmp.report.wording import VERDICT_WORDS, confidence_text, format_p, p_is, points
from qatcmp.report.wording import ci_text as _ci
from qatcmp.report.wording import num as _num
from qatcmp.report.wording import pct as _pct


def format_summary(report: Report) -> str:
    """The plain-language sentences per pair, warnings first, for the terminal."""
    lines = [f"WARNING: {w}" for w in report.warnings]
    lines += header_lines(report, markdown=False)
    for bench in report.benchmarks:
        lines.extend(pair.sentence for pair in bench.pairs)
        if bench.cochran_q is not None:
            q = bench.cochran_q
            lines.append(
                f"{bench.label}, all {len(bench.models)} models: Cochran's Q {q.statistic:.2f} "
                f"(df {q.df}), p {p_is(q.p)}"
            )
    lines.extend(report.notes)
    return "\n".join(lines)


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
                _truncated(found, report.kind),
            ]
        rows.append(cells)
    return _table(header, rows)


def _truncated(result: ModelResult, kind: str) -> object:
    """Unknown (the source does not record finish_reason) is not 0."""
    if result.truncated is None:
        return "—" if kind == "counts" else "unknown"
    if result.truncation_unknown:
        return f"{result.truncated} (+{result.truncation_unknown} unknown)"
    return result.truncated


def _without_truncated(result: ModelResult) -> str:
    if result.truncated is None:
        return "unknown"
    return f"{_pct(result.accuracy_excluding_truncated)} ({result.n_excluding_truncated})"


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
            r.model, _pct(r.accuracy), f"{r.correct}/{r.n}", _ci(r.ci95), _truncated(r, kind), r.no_answer,
            r.errors, _without_truncated(r),
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


def _ci_with_level(interval, confidence: float | None) -> str:
    return "—" if interval is None else f"{_ci(interval, signed=True)} at {confidence_text(confidence)}"


def _mode_cell(pair: PairResult) -> str:
    other = pair.other_mode
    if other is None:
        return "—"
    if not pair.verdict_differs_by_mode:
        return f"same ({other.mode})"
    return f"**differs**: {other.mode} says {VERDICT_WORDS.get(other.verdict, other.verdict)} ({points(other.diff)})"


def _pair_rows(bench: BenchmarkReport, margin: float) -> list[str]:
    header = [
        "A vs B", "n", "A only", "B only", "diff (points)", "95% CI (Tango, unadjusted)",
        "CI the verdict uses", "McNemar exact", "mid-p", "Holm", "flips",
        f"TOST p vs ±{margin * 100:g} (Holm)", f"equivalence CI (TOST)", "MDE (80% power)", "verdict",
    ]
    checked = any(p.other_mode is not None for p in bench.pairs)
    if checked:
        header.append("other extraction mode")
    rows = []
    for p in bench.pairs:
        row = [
            f"{p.a} vs {p.b}", p.n, p.a_only, p.b_only, points(p.diff), _ci(p.diff_ci95, signed=True),
            _ci_with_level(p.diff_ci_holm, p.diff_ci_holm_confidence),
            format_p(p.mcnemar_exact_p), format_p(p.mcnemar_midp_p), format_p(p.p_holm), _pct(p.flips),
            f"{format_p(p.equivalence_p)} ({format_p(p.equivalence_p_holm)})",
            _ci_with_level(p.equivalence_ci_holm, p.equivalence_ci_holm_confidence),
            "—" if p.power is None or p.power.mde is None else f"{p.power.mde * 100:.1f} points",
            p.verdict.replace("_", " "),
        ]
        if checked:
            row.append(_mode_cell(p))
        rows.append(row)
    lines = _table(header, rows)
    lines += [
        "",
        "The verdict: a difference when the Holm-adjusted mid-p is below alpha; equivalent when the "
        "Holm-adjusted TOST p is below alpha (the TOST interval then lies inside the margin). "
        "\"CI the verdict uses\" is Tango's interval at the level each decision was in effect made "
        "at (95% and 90% with one pair; wider with several).",
    ]
    clustered = [p for p in bench.pairs if p.diff_all_samples is not None]
    if clustered:
        lines += ["", f"Over all {bench.samples} samples per question (clustered by question):", "", *_table(
            ["A vs B", "diff (points)", "95% CI"],
            [[f"{p.a} vs {p.b}", points(p.diff_all_samples), _ci(p.diff_all_samples_ci95, signed=True)] for p in clustered],
        )]
    return lines


def _independent_note(bench: BenchmarkReport) -> str:
    if any(p.independent_basis == "question_means" for p in bench.pairs):
        return INDEPENDENT_NOTE_SAMPLES
    return INDEPENDENT_NOTE


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
    title = "qatcmp report" + (f": {PurePath(report.source).name}" if report.kind == "run" else " (totals only)")
    out = [f"# {title}", ""]
    for warning in report.warnings:
        out += [f"> **⚠ Warning:** {warning}", ""]
    header = header_lines(report)
    out += [*header, ""] if header else []
    out += _design_lines(report)  # adaptive or extended: the anytime-valid results lead
    out += ["## Summary", ""]
    out += [f"- {p.sentence}" for b in report.benchmarks for p in b.pairs] or ["- (one model: nothing to compare)"]
    out += ["", *(f"{n}" for n in report.notes), ""] if report.notes else [""]
    out += setup_section(report)
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
            out += ["### Independent-sample tests (ignore the pairing)", "", _independent_note(bench), "", *_independent_rows(bench), ""]
        if bench.cochran_q is not None:
            q = bench.cochran_q
            out += [
                f"Cochran's Q over all {len(bench.models)} models ({q.n} questions all answered): "
                f"Q = {q.statistic:.2f}, df = {q.df}, p {p_is(q.p)}.", "",
            ]
        if bench.categories:
            out += ["### Per category", "", *_category_rows(bench), ""]
            out += ["Per-category p-values are not adjusted for the number of categories: read them as descriptive.", ""]
        if bench.categories_note:
            out += [bench.categories_note, ""]
        if bench.excluded_items:
            out += [f"- {bench.excluded_items} questions left out of every pair (they differ between the merged sources)."]
        out += [f"- {n}" for n in bench.notes] + ([""] if bench.notes or bench.excluded_items else [])
    if "differences.png" in report.plots:
        out += [
            "## Paired differences", "",
            "![Paired differences: the interval each verdict uses, for the difference (thin) and for equivalence (thick)](differences.png)", "",
        ]
    out += [
        "---",
        f"qatcmp {report.qatcmp_version}, report schema {report.schema_version}; "
        f"alpha {report.alpha}, equivalence margin ±{report.margin * 100:g} points "
        f"({'default' if report.margin_source == 'default' else 'given with --margin'}), power {report.target_power}.",
        "",
    ]
    return "\n".join(out)


def _power_lines(bench: BenchmarkReport) -> list[str]:
    """Design figures for a difference the user names (--delta, else the margin), never for
    the observed one: power computed from the observed difference only restates its p-value."""
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
        named = "the equivalence margin" if power.delta_source == "margin" else "--delta"
        needed = (
            f"{power.n_needed} questions would detect {power.delta * 100:g} points ({named})"
            if power.n_needed is not None
            else f"the models disagree too rarely for a difference of {power.delta * 100:g} points ({named}) to exist"
        )
        lines.append(
            f"- {pair.a} vs {pair.b}: the models disagree on {_pct(power.discordance)} of questions; "
            f"with {pair.n} questions the smallest difference detectable with "
            f"{power.power:.0%} power is {mde}; {needed}."
        )
    if not lines:
        return []
    level = bench.pairs[0].power.alpha if bench.pairs and bench.pairs[0].power else None
    pairs = len(bench.pairs)
    scope = (
        f"two-sided, at alpha {level:.4g} = {bench.pairs[0].power.alpha_family:g}/{pairs} "
        "(Holm's first step, so a study of this size meets the rule the verdict uses)"
        if pairs > 1 and level is not None
        else "two-sided"
    )
    return [f"Power (paired design, Connor 1987, {scope}; at the observed disagreement rate):", "", *lines, ""]


def _design_lines(report: Report) -> list[str]:
    """An adaptive run's anytime-valid decisions, or the note that an extended run's
    fixed-sample p-values are not valid."""
    if report.adaptive is not None:
        return adaptive_markdown(report.adaptive, plot=ADAPTIVE_PNG if ADAPTIVE_PNG in report.plots else None)
    if report.extensions:
        return extension_markdown(report.extensions)
    return []
