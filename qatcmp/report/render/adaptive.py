"""The adaptive part of the report, pure: an adaptive run's decisions (or an extended fixed
run's history) to markdown lines, and the figure of the anytime intervals narrowing block by
block. The report puts these lines first: after an adaptive stop or an extension the
anytime-valid results are the valid ones, and the fixed-sample p-values are labelled as not
valid for a design that looked at the data."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from matplotlib.figure import Figure

from qatcmp.report.model import AdaptiveState, PairDecision

ADAPTIVE_PNG = "adaptive_intervals.png"
_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]
_BENCHMARK_NAMES = {"mmlu_pro": "MMLU-Pro", "humaneval": "HumanEval"}

FIXED_SAMPLE_NOTE = (
    "This run looked at its data while it ran ({why}). The fixed-sample statistics (McNemar "
    "p-values, Holm, the paired-difference intervals, TOST) assume a number of questions fixed "
    "in advance and are **not valid** for a design that looked at the data; the anytime-valid "
    "results above are."
)


def _md(text: str) -> str:
    """Model names come from a config someone wrote: keep them from breaking a table."""
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _pts(x: float) -> str:
    return f"{100 * x:+.1f}"


def pair_sentence(pair: PairDecision, margin: float) -> str:
    """One plain sentence per pair, e.g. '4bit vs 8bit, MMLU-Pro: different after 75
    questions, -12.0 points [-21.3, -2.4] (anytime), anytime p 0.011'."""
    lo, hi = pair.interval
    bench = _BENCHMARK_NAMES.get(pair.benchmark, pair.benchmark)
    head = (f"{_md(pair.a)} vs {_md(pair.b)}, {bench}: {_pts(pair.diff)} points "
            f"[{_pts(lo)}, {_pts(hi)}] (anytime interval), anytime p {pair.p_anytime:.3g}, "
            f"e-value {pair.e_value:.3g}")
    if pair.decision == "different":
        return f"{head} — different, decided after {pair.questions_used} questions"
    if pair.decision == "equivalent":
        return f"{head} — equivalent within ±{100 * margin:g} points, decided after {pair.questions_used} questions"
    more = (f"; about {pair.more_questions} more questions might decide it" if pair.more_questions
            else "; no decision in sight at this difference")
    return f"{head} — undecided after {pair.questions_used} questions{more}"


def adaptive_markdown(state: AdaptiveState, *, plot: str | None = ADAPTIVE_PNG) -> list[str]:
    """The adaptive section of report.md, to be placed before the fixed-sample results."""
    s = state.settings
    lines = [
        "## Anytime-valid decisions (adaptive run)",
        "",
        f"**Stopping rule.** {state.stopping_rule}",
        "",
        f"Family: {state.family}; α = {s.alpha:g} for the family (Bonferroni over its m pairs), "
        f"equivalence margin ±{100 * s.margin:g} points, blocks of {s.block} questions, "
        f"{state.samples} answer(s) per question.",
        "",
        "| benchmark | pair | decision | questions used | difference (points) | anytime interval | e-value | anytime p (family) | more questions |",
        "|---|---|---|---:|---:|---|---:|---:|---:|",
    ]
    for pair in state.pairs:
        lo, hi = pair.interval
        more = "" if pair.decision != "undecided" else ("?" if pair.more_questions is None else f"~{pair.more_questions}")
        lines.append(
            f"| {_BENCHMARK_NAMES.get(pair.benchmark, _md(pair.benchmark))} | {_md(pair.a)} vs {_md(pair.b)} "
            f"| {pair.decision} | {pair.questions_used} | {_pts(pair.diff)} | [{_pts(lo)}, {_pts(hi)}] "
            f"| {pair.e_value:.3g} | {pair.p_anytime:.3g} | {more} |"
        )
    lines.append("")
    lines += [f"- {pair_sentence(pair, s.margin)}" for pair in state.pairs]
    lines.append("")
    for name, bench in state.benchmarks.items():
        label = _BENCHMARK_NAMES.get(name, _md(name))
        status = ("finished" if bench.finished else
                  f"not finished (still asking {', '.join(_md(v) for v in bench.active)}; the same command continues)")
        lines.append(f"- {label}: {bench.blocks_done} blocks, {bench.questions_asked} of a budget of "
                     f"{bench.budget} questions asked; {status}.")
    lines += ["", "The decision 'different' comes from the e-value, the interval from the betting confidence "
              "sequence: two anytime-valid procedures, so after a few questions the interval can still reach 0 "
              "when the e-value has already decided.", ""]
    lines += [FIXED_SAMPLE_NOTE.format(why="it asked in blocks and stopped each pair once it was decided"), ""]
    if plot:
        lines += [f"![Anytime intervals block by block]({plot})", ""]
    return lines


def extension_markdown(extensions: Sequence[dict[str, Any]]) -> list[str]:
    """For a fixed run that was extended (the manifest's `extensions`): say so, and label the
    fixed-sample p-values as not valid (growing a run after looking at it is a look)."""
    if not extensions:
        return []
    steps = []
    for entry in extensions:
        before = entry.get("questions_before") or {}
        after = entry.get("questions_after") or {}
        for name in after:
            if before.get(name) != after.get(name):
                steps.append(f"{_BENCHMARK_NAMES.get(name, _md(str(name)))} {before.get(name, 0)} → {after[name]}")
    grown = ", ".join(steps) or "more questions"
    return [FIXED_SAMPLE_NOTE.format(why=f"it was extended: {grown}").replace(
        "the anytime-valid results above are", "use `qatcmp run --until-decided` for results that stay valid"), ""]


# --------------------------------------------------------------------------- the plot


def interval_figure(state: AdaptiveState) -> Figure:
    """One panel per benchmark: for each pair, the observed difference and its anytime
    interval (bar) at every look, with 0 and ±margin marked."""
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
