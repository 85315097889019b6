"""The adaptive part of the report, pure: an adaptive run's decisions (or an extended fixed
run's history) to markdown lines, and the figure of the anytime intervals narrowing block by
block. The report puts these lines first: after an adaptive stop or an extension the
anytime-valid results are the valid ones, and the fixed-sample p-values are labelled as not
valid for a design that looked at the data."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from qatcmp.report.model import AdaptiveState, BlockLook, PairDecision, Report

if TYPE_CHECKING:
    from matplotlib.figure import Figure

ADAPTIVE_PNG = "adaptive_intervals.png"
_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]
_BENCHMARK_NAMES = {"mmlu_pro": "MMLU-Pro", "humaneval": "HumanEval"}

FIXED_SAMPLE_NOTE = (
    "This run looked at its data while it ran ({why}). The fixed-sample statistics (McNemar "
    "p-values, Holm, the paired-difference intervals, TOST) assume a number of questions fixed "
    "in advance and are **not valid** for a design that looked at the data; the anytime-valid "
    "results above are."
)
ADAPTIVE_WHY = "it asked in blocks and stopped each pair once it was decided"
TWO_PROCEDURES_NOTE = (
    "The decision 'different' comes from the e-value, the interval from the betting confidence "
    "sequence: two anytime-valid procedures, so after a few questions the interval can still reach 0 "
    "when the e-value has already decided."
)
FUTILITY_NOTE = (
    "'below-plan' comes from the futility stop (--futility β): gaps of the planned size or more are "
    "rejected at level β, a far looser level than the interval's α/m, so the interval can still reach "
    "past the plan. It ends the comparison as not worth more questions at that plan; it is neither "
    "'equivalent' nor evidence of no difference."
)
Escape = Callable[[str], str]


def procedure_notes(state: AdaptiveState) -> list[str]:
    """Why the interval can disagree with a decision: the notes that apply to this run."""
    notes = [TWO_PROCEDURES_NOTE]
    if any(pair.decision == "below-plan" for pair in state.pairs):
        notes.append(FUTILITY_NOTE)
    return notes


def _md(text: str) -> str:
    """Model names come from a config someone wrote: keep them from breaking a table."""
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def as_is(text: str) -> str:
    """For renderers that escape on their own (report.html's template)."""
    return text


def _pts(x: float) -> str:
    return f"{100 * x:+.1f}"


def benchmark_name(name: str, escape: Escape = _md) -> str:
    return _BENCHMARK_NAMES.get(name, escape(name))


def interval_points(interval: tuple[float, float]) -> str:
    lo, hi = interval
    return f"[{_pts(lo)}, {_pts(hi)}]"


def more_cell(pair: PairDecision) -> str:
    """'' when decided; '~N' more questions, or '?' when no estimate, when undecided."""
    if pair.decision != "undecided":
        return ""
    return "?" if pair.more_questions is None else f"~{pair.more_questions}"


def pair_cells(pair: PairDecision, escape: Escape = _md) -> list[str]:
    """One row of the decisions table: benchmark, pair, decision, questions used, difference,
    anytime interval, e-value, anytime p (family), more questions."""
    return [
        benchmark_name(pair.benchmark, escape), f"{escape(pair.a)} vs {escape(pair.b)}", pair.decision,
        str(pair.questions_used), _pts(pair.diff), interval_points(pair.interval),
        f"{pair.e_value:.3g}", f"{pair.p_anytime:.3g}", more_cell(pair),
    ]


def look_cells(look: BlockLook) -> list[str]:
    """One look of a pair (a point of the interval plot): block, questions, difference,
    anytime interval, e-value, anytime p (family), the pair's state then."""
    return [str(look.block), str(look.questions), _pts(look.diff), interval_points(look.interval),
            f"{look.e_value:.3g}", f"{look.p_anytime:.3g}", look.decision]


LOOK_HEADER = ["block", "questions", "difference (points)", "anytime interval", "e-value", "anytime p (family)", "state"]
PAIR_HEADER = ["benchmark", "pair", "decision", "questions used", "difference (points)", "anytime interval",
               "e-value", "anytime p (family)", "more questions"]


def family_line(state: AdaptiveState, escape: Escape = _md) -> str:
    s = state.settings
    return (f"Family: {escape(state.family)}; α = {s.alpha:g} for the family (Bonferroni over its m pairs), "
            f"equivalence margin ±{100 * s.margin:g} points, blocks of {s.block} questions, "
            f"{state.samples} answer(s) per question.")


def benchmark_status_lines(state: AdaptiveState, escape: Escape = _md) -> list[str]:
    """Per benchmark: blocks, questions asked of the budget, finished or who is still asked."""
    lines = []
    for name, bench in state.benchmarks.items():
        status = ("finished" if bench.finished else
                  f"not finished (still asking {', '.join(escape(v) for v in bench.active)}; the same command continues)")
        lines.append(f"{benchmark_name(name, escape)}: {bench.blocks_done} block{'' if bench.blocks_done == 1 else 's'}, {bench.questions_asked} of a budget of "
                     f"{bench.budget} questions asked; {status}.")
    return lines


def pair_sentence(pair: PairDecision, margin: float, escape: Escape = _md, *,
                  plan_gap: float | None = None, futility: float | None = None) -> str:
    """One plain sentence per pair, e.g. '4bit vs 8bit, MMLU-Pro: different after 75
    questions, -12.0 points [-21.3, -2.4] (anytime), anytime p 0.011'."""
    head = (f"{escape(pair.a)} vs {escape(pair.b)}, {benchmark_name(pair.benchmark, escape)}: {_pts(pair.diff)} points "
            f"{interval_points(pair.interval)} (anytime interval), anytime p {pair.p_anytime:.3g}, "
            f"e-value {pair.e_value:.3g}")
    if pair.decision == "different":
        return f"{head} — different, decided after {pair.questions_used} questions"
    if pair.decision == "equivalent":
        return f"{head} — equivalent within ±{100 * margin:g} points, decided after {pair.questions_used} questions"
    if pair.decision == "below-plan":
        gap = "the planned gap" if plan_gap is None else f"±{100 * plan_gap:g} points"
        level = "" if futility is None else f" at level {futility:g}"
        capital = "" if pair.futility_capital is None else f", capital {pair.futility_capital:.3g}"
        return (f"{head} — below the plan: gaps of {gap} or more are rejected{level}{capital} "
                f"(futility stop), stopped after {pair.questions_used} questions; not evidence of "
                "equivalence, and the difference may still be real but smaller")
    more = (f"; about {pair.more_questions} more questions might decide it" if pair.more_questions
            else "; no decision in sight at this difference")
    return f"{head} — undecided after {pair.questions_used} questions{more}"


def extension_steps(extensions: Sequence[dict[str, Any]], escape: Escape = _md) -> str:
    steps = []
    for entry in extensions:
        before = entry.get("questions_before") or {}
        after = entry.get("questions_after") or {}
        for name in after:
            if before.get(name) != after.get(name):
                steps.append(f"{benchmark_name(str(name), escape)} {before.get(name, 0)} → {after[name]}")
    return ", ".join(steps) or "more questions"


def extension_note(extensions: Sequence[dict[str, Any]], escape: Escape = _md) -> str:
    return FIXED_SAMPLE_NOTE.format(why=f"it was extended: {extension_steps(extensions, escape)}").replace(
        "the anytime-valid results above are", "use `qatcmp run --until-decided` for results that stay valid")


def design_note(report: Report, *, markdown: bool = True) -> str | None:
    """Why the fixed-sample p-values are not valid for this run (an adaptive stop, or an
    extension), or None for a fixed run."""
    if report.adaptive is not None:
        note = FIXED_SAMPLE_NOTE.format(why=ADAPTIVE_WHY)
    elif report.extensions:
        note = extension_note(report.extensions, _md if markdown else as_is)
    else:
        return None
    return note if markdown else note.replace("**", "").replace("`", "")


def adaptive_markdown(state: AdaptiveState, *, plot: str | None = ADAPTIVE_PNG) -> list[str]:
    """The adaptive section of report.md, to be placed before the fixed-sample results."""
    lines = [
        "## Anytime-valid decisions (adaptive run)",
        "",
        f"**Stopping rule.** {state.stopping_rule}",
        "",
        family_line(state),
        "",
        "| " + " | ".join(PAIR_HEADER) + " |",
        "|---|---|---|---:|---:|---|---:|---:|---:|",
    ]
    lines += ["| " + " | ".join(pair_cells(pair)) + " |" for pair in state.pairs]
    lines.append("")
    s = state.settings
    lines += ["- " + pair_sentence(pair, s.margin, plan_gap=s.plan_gap, futility=s.futility) for pair in state.pairs]
    lines.append("")
    lines += [f"- {line}" for line in benchmark_status_lines(state)]
    lines.append("")
    for note in procedure_notes(state):
        lines += [note, ""]
    lines += [FIXED_SAMPLE_NOTE.format(why=ADAPTIVE_WHY), ""]
    if plot:
        lines += [f"![Anytime intervals block by block]({plot})", ""]
    return lines


def extension_markdown(extensions: Sequence[dict[str, Any]]) -> list[str]:
    """For a fixed run that was extended (the manifest's `extensions`): say so, and label the
    fixed-sample p-values as not valid (growing a run after looking at it is a look)."""
    return [extension_note(extensions), ""] if extensions else []


# --------------------------------------------------------------------------- the plot


def interval_figure(state: AdaptiveState) -> Figure:
    """One panel per benchmark: for each pair, the observed difference and its anytime
    interval (bar) at every look, with 0 and ±margin marked."""
    from matplotlib.figure import Figure  # loaded only when a plot is drawn

    benchmarks = [name for name in state.benchmarks if any(p.benchmark == name and p.history for p in state.pairs)]
    figure = Figure(figsize=(5.2 * max(1, len(benchmarks)) + 0.4, 3.8), layout="constrained")
    axes = figure.subplots(1, max(1, len(benchmarks)), squeeze=False)[0]
    margin = 100 * state.settings.margin
    for ax, name in zip(axes, benchmarks):
        pairs = [p for p in state.pairs if p.benchmark == name and p.history]
        block = state.settings.block
        for index, pair in enumerate(pairs):
            colour = _COLOURS[index % len(_COLOURS)]
            # Pairs side by side at each look, so their bars do not hide each other.
            shift = (index - (len(pairs) - 1) / 2) * block * 0.12
            n = [h.questions + shift for h in pair.history]
            diff = [100 * h.diff for h in pair.history]
            below = [d - 100 * h.interval[0] for d, h in zip(diff, pair.history)]
            above = [100 * h.interval[1] - d for d, h in zip(diff, pair.history)]
            ax.errorbar(n, diff, yerr=[below, above], marker="o", markersize=3, capsize=2, linewidth=1,
                        color=colour, label=f"{pair.a} vs {pair.b}: {pair.decision} ({pair.questions_used})")
        ax.axhline(0, color="black", linewidth=0.8)
        if margin > 0:
            for y in (-margin, margin):
                ax.axhline(y, color="grey", linewidth=0.8, linestyle="--")
        ax.set_title(f"{_BENCHMARK_NAMES.get(name, name)}: anytime intervals")
        ax.set_xlabel("questions asked")
        ax.set_ylabel("difference (points)")
        ax.legend(fontsize=7, loc="best")
    return figure
