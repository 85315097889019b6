"""qatcmp score: score a run's transcripts offline (answer extraction, sandboxed code)."""

from __future__ import annotations

import argparse
import math
import time
from collections import Counter

from rich.console import Console
from rich.table import Table

from qatcmp.errors import ConfigError
from qatcmp.records import ScoreRecord
from qatcmp.rundir import RunDir
from qatcmp.sandbox import Limits, Sandbox
from qatcmp.scoring import EXTRACT_MODES, score_run

MAX_TIMEOUT_S = 3600  # per sample; a test that needs longer is stuck


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "score",
        help="score a run's transcripts (writes scores.jsonl)",
        description="Score every transcript of a run folder without any server: MMLU-Pro by "
        "answer extraction, HumanEval by running the extracted code in a sandbox. Writes "
        "RUN/scores.jsonl and RUN/scores.meta.json; the transcripts are only read.",
    )
    p.add_argument("run", help="the run folder (runs/NAME)")
    p.add_argument(
        "--extract", choices=EXTRACT_MODES, default="default",
        help="MMLU-Pro answer extraction: 'default' (robust to chat answers, last answer "
        "statement wins) or 'official' (TIGER-Lab's three-rule cascade, no random guess)",
    )
    p.add_argument("--jobs", type=int, default=None, help="HumanEval samples run in parallel (default: CPU count)")
    p.add_argument("--timeout", type=float, default=Limits.wall_s,
                   help=f"wall-clock limit per HumanEval sample, seconds (default {Limits.wall_s:g})")
    add_unsafe_flag(p)
    p.set_defaults(func=handle)


def add_unsafe_flag(parser: argparse.ArgumentParser) -> None:
    """--unsafe-no-isolation (score and stats): run model code even where no sandbox works."""
    parser.add_argument(
        "--unsafe-no-isolation", action="store_true",
        help="run HumanEval code even when no OS sandbox (bubblewrap, sandbox-exec) works here: the "
        "code then runs with your rights (files, network). Recorded in scores.meta.json and the report",
    )


def handle(args: argparse.Namespace) -> int:
    if args.jobs is not None and args.jobs < 1:
        raise ConfigError("--jobs must be at least 1")
    if not (math.isfinite(args.timeout) and 0 < args.timeout <= MAX_TIMEOUT_S):
        raise ConfigError(f"--timeout {args.timeout:g}: give a number of seconds above 0 and at most {MAX_TIMEOUT_S}")
    console = Console()
    rd = RunDir(args.run)
    rd.require()
    limits = Limits(wall_s=args.timeout, cpu_s=max(1, int(args.timeout + 0.999)))
    sandbox = Sandbox(limits, allow_unsafe=args.unsafe_no_isolation)
    started = time.monotonic()
    scores = score_run(rd, mode=args.extract, jobs=args.jobs, sandbox=sandbox, chosen_by_user=True)
    elapsed = time.monotonic() - started
    if any(s.benchmark == "humaneval" for s in scores):
        console.print(f"sandbox protections: {sandbox.protections.describe()}", highlight=False)
        if not sandbox.protections.isolated:
            console.print(f"UNSAFE: the code ran without isolation ({sandbox.protections.missing})", highlight=False)
    console.print(summary_table(scores, args.extract))
    for line in breakdown_lines(scores):
        console.print(line, highlight=False)
    console.print(f"{len(scores)} records scored in {elapsed:.1f} s -> {rd.scores}")
    return 0


def _groups(scores: list[ScoreRecord]) -> dict[tuple[str, str], list[ScoreRecord]]:
    groups: dict[tuple[str, str], list[ScoreRecord]] = {}
    for s in scores:
        groups.setdefault((s.model, s.benchmark), []).append(s)
    return dict(sorted(groups.items()))


def summary_table(scores: list[ScoreRecord], mode: str) -> Table:
    table = Table(title=f"scores (MMLU-Pro extraction: {mode})")
    for column in ("model", "benchmark", "records", "correct", "accuracy", "truncated", "errors"):
        table.add_column(column, justify="left" if column in ("model", "benchmark") else "right")
    for (model, benchmark), group in _groups(scores).items():
        correct = sum(s.correct for s in group)
        table.add_row(
            model, benchmark, str(len(group)), str(correct), f"{correct / len(group):.1%}",
            str(sum(s.truncated for s in group)), str(sum(s.status == "server_error" for s in group)),
        )
    return table


def breakdown_lines(scores: list[ScoreRecord]) -> list[str]:
    """Per model and benchmark: the statuses, and how many answers each extraction rule decided."""
    lines = []
    for (model, benchmark), group in _groups(scores).items():
        statuses = Counter(s.status for s in group)
        rules = Counter(s.extraction_rule for s in group)
        lines.append(
            f"{model}/{benchmark}: " + ", ".join(f"{k} {v}" for k, v in statuses.most_common())
            + "; decided by " + ", ".join(f"{k} {v}" for k, v in rules.most_common())
        )
    return lines
