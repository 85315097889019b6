"""PNG plots for the report: accuracy with intervals, and a forest plot of paired differences.

Figures are built with matplotlib's object API on the Agg canvas, never pyplot: no display,
no global state, safe in tests and on headless machines. Pure: Report → PNG bytes.
"""

from __future__ import annotations

import io

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from qatcmp.report.model import AdaptiveState, Report
from qatcmp.report.render.adaptive import ADAPTIVE_PNG, interval_figure

ACCURACY_PNG = "accuracy.png"
DIFFERENCES_PNG = "differences.png"
_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]


def render_png(report: Report) -> dict[str, bytes]:
    """The plots that have something to show, by file name."""
    rendered = {}
    if any(b.models for b in report.benchmarks):
        rendered[ACCURACY_PNG] = figure_png(accuracy_figure(report))
    if any(p.diff_ci95 is not None for b in report.benchmarks for p in b.pairs):
        rendered[DIFFERENCES_PNG] = figure_png(differences_figure(report))
    if report.adaptive is not None and any(p.history for p in report.adaptive.pairs):
        rendered[ADAPTIVE_PNG] = render_adaptive_png(report.adaptive)
    return rendered


def render_adaptive_png(state: AdaptiveState) -> bytes:
    """The anytime intervals of an adaptive run, look by look."""
    return figure_png(interval_figure(state))


def figure_png(figure: Figure) -> bytes:
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    return buffer.getvalue()


def accuracy_figure(report: Report) -> Figure:
    """One panel per benchmark: each model's accuracy with its 95% interval, value labelled."""
    benchmarks = [b for b in report.benchmarks if b.models]
    figure = Figure(figsize=(4.2 * len(benchmarks) + 0.6, 3.6), layout="constrained")
    axes = figure.subplots(1, len(benchmarks), squeeze=False)[0]
    colour = {m: _COLOURS[i % len(_COLOURS)] for i, m in enumerate(report.models)}
    for ax, bench in zip(axes, benchmarks):
        names = [r.model for r in bench.models]
        values = [100 * (r.accuracy or 0.0) for r in bench.models]
        lows = [100 * (r.accuracy - r.ci95[0]) if r.ci95 and r.accuracy is not None else 0 for r in bench.models]
        highs = [100 * (r.ci95[1] - r.accuracy) if r.ci95 and r.accuracy is not None else 0 for r in bench.models]
        positions = range(len(names))
        ax.bar(positions, values, color=[colour[n] for n in names], alpha=0.75, width=0.6)
        ax.errorbar(positions, values, yerr=[lows, highs], fmt="none", ecolor="black", capsize=6, linewidth=1.2)
        for x, value, high, r in zip(positions, values, highs, bench.models):
            # Above the interval's top, where neither the bar nor the whisker covers it.
            ax.annotate(
                f"{value:.1f}%\n{r.correct}/{r.n}",
                (x, value + high + 1.5),
                ha="center",
                va="bottom",
                fontsize=9,
            )
        ax.set_xticks(list(positions), names, fontsize=10)
        ax.set_ylim(0, 118)  # room for the labels above an interval reaching 100%
        ax.set_yticks(range(0, 101, 20))
        ax.set_ylabel("accuracy (%)")
        ax.set_title(f"{bench.label} — 95% intervals", fontsize=11)
        ax.grid(axis="y", alpha=0.3)
    return figure


def _confidence(value: float | None) -> str:
    if value is None:
        return "?"
    rounded = round(100 * value, 1)
    return f"{rounded:.0f}%" if rounded == round(rounded) else f"{rounded:.1f}%"


def differences_figure(report: Report) -> Figure:
    """Forest plot of the intervals the verdicts use: per pair, the interval for the
    difference (thin line, tested against 0; 95% with one pair, Holm-compatible with several)
    and the TOST interval (thick line, tested against the shaded margin; 90% with one pair).
    Old report.json files without these intervals fall back to the 95% Tango interval."""
    rows = [
        (f"{b.label}: {p.a} − {p.b}", p)
        for b in report.benchmarks
        for p in b.pairs
        if p.diff_ci95 is not None
    ]
    figure = Figure(figsize=(8.5, 1.3 + 0.55 * len(rows)), layout="constrained")
    ax = figure.subplots()
    margin = 100 * report.margin
    ax.axvspan(-margin, margin, color="#2ca02c", alpha=0.12, label=f"equivalence margin ±{margin:g}")
    ax.axvline(0, color="black", linewidth=0.8)
    for y, (label, pair) in enumerate(reversed(rows)):
        difference = pair.diff_ci_holm or pair.diff_ci95
        low, high = (100 * v for v in difference)
        significant = pair.verdict in ("difference", "small_difference")
        colour = "#d62728" if significant else "#1f77b4"
        ax.plot([low, high], [y + 0.12, y + 0.12], color=colour, linewidth=1.2)
        if pair.equivalence_ci_holm is not None:
            eq_low, eq_high = (100 * v for v in pair.equivalence_ci_holm)
            eq_colour = "#2ca02c" if pair.equivalent else "#7f7f7f"
            ax.plot([eq_low, eq_high], [y - 0.12, y - 0.12], color=eq_colour, linewidth=4, solid_capstyle="butt")
        ax.plot([100 * pair.diff], [y], "o", color=colour, markersize=7)
        level = _confidence(pair.diff_ci_holm_confidence) if pair.diff_ci_holm else "95%"
        equivalence = (
            f"; TOST {_confidence(pair.equivalence_ci_holm_confidence)}"
            if pair.equivalence_ci_holm is not None else ""
        )
        # The numbers in a column right of the plot, where no interval can cover them.
        ax.annotate(
            f"{100 * pair.diff:+.1f} [{low:+.1f}, {high:+.1f}] at {level}{equivalence}",
            (1.02, y),
            xycoords=ax.get_yaxis_transform(),
            va="center",
            fontsize=9,
            color=colour,
        )
    ax.set_yticks(range(len(rows)), [label for label, _ in reversed(rows)], fontsize=10)
    ax.set_ylim(-0.7, len(rows) - 0.3)
    ax.set_xlabel(
        "accuracy difference, A − B (points). Thin: interval for the difference (vs 0; red = "
        "Holm-significant). Thick: TOST interval (vs the margin; green = equivalent)",
        fontsize=9,
    )
    several = any(len(b.pairs) > 1 for b in report.benchmarks)
    ax.set_title(
        "Paired differences: the intervals the verdicts use (Tango; "
        + ("Holm-compatible levels)" if several else "95% for the difference, 90% for TOST)"),
        fontsize=11,
    )
    left, right = ax.get_xlim()
    ax.set_xlim(min(left, -margin - 2), max(right, margin + 2))
    ax.legend(loc="lower right", fontsize=8, frameon=False)
    ax.grid(axis="x", alpha=0.3)
    return figure
