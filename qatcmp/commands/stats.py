"""qatcmp stats: paired statistics and the report for a run, or a totals-only report."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from qatcmp.commands.score import add_unsafe_flag
from qatcmp.errors import ConfigError
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from qatcmp.report import Report


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "stats",
        help="paired statistics and the report (report.json, report.md, plots) for a run",
        description="Score the run if needed, then compare the variants on the questions they "
        "all answered: accuracy with Wilson intervals, paired differences with Tango intervals, "
        "McNemar exact and mid-p with Holm adjustment, equivalence within a margin (TOST, Holm-"
        "adjusted), sample sizes for a named difference. MMLU-Pro is scored in both extraction "
        "modes; the report uses the one chosen last with `qatcmp score --extract` and marks every "
        "pair whose verdict differs between them. "
        "Writes report.json, report.md and PNG plots into the run folder. With --counts, works "
        "from totals only (as in a published table).",
    )
    p.add_argument("run", nargs="?", help="run folder, e.g. runs/gemma4-quants")
    p.add_argument("--reference", metavar="MODEL", help="compare each other variant with this one (default: every pair)")
    p.add_argument(
        "--models", metavar="A,B[,C]",
        help="compare only these variants (Holm then adjusts over their pairs only; default: all)",
    )
    p.add_argument("--alpha", type=float, default=0.05, help="significance level (default 0.05)")
    p.add_argument(
        "--margin", type=float, default=None,
        help="equivalence margin as a proportion (default 0.05 = ±5 points; the report records which)",
    )
    p.add_argument(
        "--delta", type=float, default=None,
        help="the difference to give sample sizes for, as a proportion (default: the margin)",
    )
    p.add_argument(
        "--counts",
        metavar="SPEC",
        help="totals only, e.g. 'humaneval:6bit=98/100,qat8=90/100;mmlu_pro:6bit=29/50,qat8=26/50'",
    )
    p.add_argument("--out", metavar="DIR", help="with --counts: also write report.json, report.md and plots here")
    p.add_argument("--json", action="store_true", help="print report.json to stdout instead of the summary")
    add_unsafe_flag(p)
    p.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    # statsmodels, scipy and matplotlib take seconds to import: only when the command runs.
    from qatcmp.report import build_counts_report, build_report, write_report

    if args.counts is not None:
        if args.run:
            raise ConfigError("give either a run folder or --counts, not both")
        if args.models:
            raise ConfigError("--models is for a run folder; --counts compares the totals it is given")
        report = build_counts_report(args.counts, reference=args.reference, alpha=args.alpha, margin=args.margin)
        written = None
        if args.out:
            write_report(report, Path(args.out))
            written = Path(args.out)
    else:
        if not args.run:
            raise ConfigError("give a run folder (qatcmp stats runs/NAME) or --counts")
        if args.out:
            raise ConfigError("--out is for --counts; a run's report is written into its folder")
        from qatcmp.scoring import ensure_scores

        # Scored here first so the flag reaches the sandbox; build_report then finds them current.
        ensure_scores(args.run, mode=None, unsafe_no_isolation=args.unsafe_no_isolation)
        report = build_report(
            args.run, reference=args.reference, alpha=args.alpha, margin=args.margin, delta=args.delta,
            models=_model_list(args.models),
        )
        written = Path(args.run)
    _print(report, written, as_json=args.json)
    return 0


def _model_list(value: str | None) -> list[str] | None:
    if value is None:
        return None
    names = [name.strip() for name in value.split(",") if name.strip()]
    if not names:
        raise ConfigError("--models: give variant names separated by commas, e.g. --models 6bit,qat8")
    return names


def _print(report: Report, written: Path | None, *, as_json: bool) -> None:
    from qatcmp.report import format_summary

    if as_json:
        print(json.dumps(report.model_dump(mode="json"), indent=2, ensure_ascii=False))
        return
    print(format_summary(report))
    if written is not None:
        files = ", ".join(["report.md", "report.json", *report.plots, "report.html"])
        print(f"\nWrote {files} in {written}")
