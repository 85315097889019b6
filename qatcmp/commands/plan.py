"""qatcmp plan: how many questions a clear answer needs, before spending hours on a run."""

from __future__ import annotations

import argparse
import json
import math

from pydantic import BaseModel, Field

from qatcmp.errors import ConfigError

# The size of each benchmark's full test set: a plan above it cannot be run as asked.
BENCHMARK_SIZES = {"humaneval": 164, "mmlu_pro": 12032}
BENCHMARK_LABELS = {"humaneval": "HumanEval", "mmlu_pro": "MMLU-Pro"}
DEFAULT_P = 0.5  # accuracy for the independent design when not given: the most demanding
SAMPLE_OPTIONS = (1, 2, 4, 8, 16)


class PlanRow(BaseModel):
    source: str  # "given", or "pilot <benchmark> <A> vs <B>"
    benchmark: str | None = None
    a: str | None = None
    b: str | None = None
    pilot_n: int | None = None
    discordance: float
    p: float  # accuracy used for the independent design
    delta: float
    paired_n: int | None  # questions, both models answering all of them
    independent_n_per_model: int | None  # for comparison: each model its own questions
    n: int | None = None  # the --n asked about
    paired_mde: float | None = None  # smallest difference detectable with n (paired)
    independent_mde: float | None = None
    # From a pilot with K >= 2 samples per question: how much of the per-question difference
    # is fixed per question, and the questions needed with 1, 2, 4, ... samples each.
    pilot_samples: int | None = None
    fixed_share: float | None = None
    questions_by_samples: dict[str, int] | None = None
    notes: list[str] = Field(default_factory=list)


class Plan(BaseModel):
    alpha: float
    power: float
    delta: float
    rows: list[PlanRow]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plan",
        help="questions needed to detect a difference (paired design), or the smallest difference a run can detect",
        description="Sample size for comparing two variants on the same questions (Connor 1987), "
        "from the difference to detect and the share of questions on which the variants disagree "
        "(--discordance, or estimated from a pilot run with --from). The independent design is "
        "shown for comparison.",
    )
    p.add_argument("--delta", type=float, help="accuracy difference to detect, as a proportion (0.04 = 4 points)")
    p.add_argument("--discordance", type=float, help="share of questions on which the two variants disagree (e.g. 0.10)")
    p.add_argument("--from", dest="pilot", metavar="RUN", help="estimate the discordance from a pilot run folder")
    p.add_argument("--reference", metavar="MODEL", help="with --from: pairs against this variant only")
    p.add_argument("--alpha", type=float, default=0.05, help="significance level, two-sided (default 0.05)")
    p.add_argument("--power", type=float, default=0.8, help="power (default 0.8)")
    p.add_argument("--p", type=float, help=f"accuracy for the independent design (default: the pilot's, else {DEFAULT_P})")
    p.add_argument("--n", type=int, help="also give the smallest difference detectable with this many questions")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    _validate(args)
    if args.pilot:
        rows = _rows_from_pilot(args)
    else:
        rows = [_row("given", args.discordance, args.p if args.p is not None else DEFAULT_P, args)]
    plan = Plan(alpha=args.alpha, power=args.power, delta=args.delta or 0.0, rows=rows)
    if args.json:
        print(json.dumps(plan.model_dump(mode="json"), indent=2))
    else:
        print(render_plan(plan))
    return 0


def _validate(args: argparse.Namespace) -> None:
    if args.delta is None and args.n is None:
        raise ConfigError("give --delta (the difference to detect) and/or --n (questions you can afford)")
    if args.delta is not None and not 0 < args.delta < 1:
        raise ConfigError("--delta must be between 0 and 1 (0.04 = 4 points)")
    if args.pilot and args.discordance is not None:
        raise ConfigError("give either --discordance or --from, not both")
    if not args.pilot and args.discordance is None:
        raise ConfigError("give --discordance (share of questions the variants disagree on) or --from RUN")
    if args.discordance is not None and not 0 < args.discordance <= 1:
        raise ConfigError("--discordance must be above 0 and at most 1 (0.10 = 10% of questions)")
    if not 0 < args.alpha < 0.5:
        raise ConfigError("--alpha must be between 0 and 0.5")
    if not 0 < args.power < 1:
        raise ConfigError("--power must be between 0 and 1")
    if args.p is not None and not 0 < args.p < 1:
        raise ConfigError("--p must be between 0 and 1")
    if args.n is not None and args.n < 1:
        raise ConfigError("--n must be at least 1")


def plan_row(
    *,
    source: str,
    discordance: float,
    p: float,
    delta: float | None,
    alpha: float,
    power: float,
    n: int | None,
    benchmark: str | None = None,
) -> PlanRow:
    """Sizes for one comparison (pure: no IO)."""
    from qatcmp.stats import independent_mde, independent_sample_size, paired_mde, paired_sample_size  # scipy: load late

    row = PlanRow(
        source=source,
        benchmark=benchmark,
        discordance=discordance,
        p=p,
        delta=delta or 0.0,
        paired_n=None,
        independent_n_per_model=None,
        n=n,
    )
    if delta:
        if discordance >= delta:
            row.paired_n = paired_sample_size(delta, discordance, alpha, power)
        else:
            row.notes.append(
                f"A {delta * 100:g}-point difference needs the variants to disagree on at least "
                f"{delta * 100:g}% of questions; the discordance is {discordance * 100:.1f}%."
            )
        if 0 <= p - delta or p + delta <= 1:
            row.independent_n_per_model = independent_sample_size(p, delta, alpha, power)
    if n is not None:
        row.paired_mde = paired_mde(n, discordance, alpha, power)
        row.independent_mde = independent_mde(n, p, alpha, power)
    row.notes.extend(_size_notes(row))
    return row


def _size_notes(row: PlanRow) -> list[str]:
    needed = row.paired_n
    if needed is None:
        return []
    names = [row.benchmark] if row.benchmark else list(BENCHMARK_SIZES)
    notes = []
    for name in names:
        size = BENCHMARK_SIZES.get(name)
        if size is None or needed <= size:
            continue
        samples = math.ceil(needed / size)
        notes.append(
            f"{BENCHMARK_LABELS[name]} has only {size} questions, fewer than the {needed} needed. "
            f"More samples per question (qatcmp run --samples K) reduce only the noise within a "
            f"question: at best (if a question's answers differ between variants only by chance) "
            f"K samples count like K times as many questions, so K >= {samples} would be needed; "
            "if the gap is a fixed property of each question, more samples buy nothing. A pilot "
            "with --samples 2 or more tells which."
        )
    return notes


def _row(source: str, discordance: float, p: float, args: argparse.Namespace, **extra) -> PlanRow:
    return plan_row(
        source=source,
        discordance=discordance,
        p=p,
        delta=args.delta,
        alpha=args.alpha,
        power=args.power,
        n=args.n,
        **extra,
    )


def _rows_from_pilot(args: argparse.Namespace) -> list[PlanRow]:
    """One row per compared pair of the pilot: its discordance, and the pair's mean accuracy
    for the independent design unless --p is given."""
    from qatcmp.report import _scores_for, report_for_run
    from qatcmp.rundir import RunDir

    run = RunDir(args.pilot)
    scores = _scores_for(run)
    report = report_for_run(run.path, scores=scores, reference=args.reference, check_modes=False)
    rows = []
    for bench in report.benchmarks:
        for pair in bench.pairs:
            if pair.n is None or pair.flips is None:
                continue
            accuracy = {m.model: m.accuracy for m in bench.models}  # all samples
            p = args.p if args.p is not None else (accuracy[pair.a] + accuracy[pair.b]) / 2
            p = min(max(p, 0.01), 0.99)  # Cohen's h needs an accuracy strictly inside (0, 1)
            row = _row(f"pilot {bench.label} {pair.a} vs {pair.b}", pair.flips, p, args, benchmark=bench.benchmark)
            row.a, row.b, row.pilot_n = pair.a, pair.b, pair.n
            if pair.flips == 0:
                row.notes.insert(0, "The pilot's variants never disagreed: no discordance to plan with.")
            if bench.samples > 1 and args.delta:
                _add_sample_options(row, scores, bench.benchmark, pair.a, pair.b, args)
            rows.append(row)
    if not rows:
        raise ConfigError(f"{args.pilot}: the pilot has no pair of variants that answered the same questions")
    return rows


def render_plan(plan: Plan) -> str:
    lines = [f"alpha {plan.alpha:g} (two-sided), power {plan.power:g}"]
    for row in plan.rows:
        lines.append("")
        head = row.source if row.source != "given" else "Paired design"
        if row.pilot_n is not None:
            head += f" ({row.pilot_n} pilot questions)"
        lines.append(f"{head}: discordance {row.discordance * 100:.1f}%")
        if row.delta:
            paired = f"{row.paired_n} questions" if row.paired_n is not None else "not computable"
            lines.append(f"  to detect {row.delta * 100:g} points: {paired} (paired, every variant answers the same questions)")
            if row.paired_n is not None:
                # The figures are bench/bench_adaptive.py's at blocks of 10 and 25 (README).
                lines.append(
                    f"  or adaptively: qatcmp run --until-decided --plan-gap {row.delta:g} --futility 0.15 with a budget of "
                    f"{2 * row.paired_n} questions (2x): in simulations about 0.8-0.95x of {row.paired_n} on average at this "
                    "gap and power, fewer when the gap is clearer or smaller than planned"
                )
            if row.independent_n_per_model is not None:
                lines.append(
                    f"  for comparison, independent samples at accuracy {row.p * 100:.0f}%: "
                    f"{row.independent_n_per_model} questions per model"
                )
        if row.n is not None:
            paired = "none" if row.paired_mde is None else f"{row.paired_mde * 100:.1f} points"
            independent = "none" if row.independent_mde is None else f"{row.independent_mde * 100:.1f} points"
            lines.append(f"  with {row.n} questions the smallest detectable difference is {paired} (paired); {independent} (independent)")
        lines.extend(f"  note: {note}" for note in row.notes)
    return "\n".join(lines)


def _add_sample_options(row: PlanRow, scores, benchmark: str, a: str, b: str, args: argparse.Namespace) -> None:
    """A pilot with several answers per question separates the noise within a question from
    the differences fixed per question, which tells what more samples would buy."""
    from qatcmp.stats import clustered_sample_size, variance_components  # scipy: load late

    from qatcmp.report import pass_rates

    def records(model: str):
        return [s for s in scores if s.benchmark == benchmark and s.model == model]

    answered_a, answered_b = records(a), records(b)
    rates_a, rates_b = pass_rates(answered_a), pass_rates(answered_b)
    counts: dict[str, int] = {}
    for record in answered_a + answered_b:
        if record.status != "server_error":
            counts[f"{record.model}/{record.item_id}"] = counts.get(f"{record.model}/{record.item_id}", 0) + 1
    shared = sorted(set(rates_a) & set(rates_b))
    samples = min((counts[f"{m}/{q}"] for q in shared for m in (a, b)), default=0)
    if samples < 2 or len(shared) < 2:
        return
    components = variance_components([rates_a[q] for q in shared], [rates_b[q] for q in shared], samples)
    total = components.variance(1)
    options = {
        str(k): n
        for k in SAMPLE_OPTIONS
        if (n := clustered_sample_size(args.delta, components, k, args.alpha, args.power)) is not None
    }
    if not options or total <= 0:
        return
    row.pilot_samples = samples
    row.fixed_share = components.between / total
    row.questions_by_samples = options
    listing = ", ".join(f"{k} → {n}" for k, n in options.items())
    size = BENCHMARK_SIZES.get(benchmark)
    note = (
        f"From the pilot's {samples} samples per question, {row.fixed_share:.0%} of the variance of "
        f"the one-answer difference is fixed per question. Questions needed by samples per "
        f"question: {listing}."
    )
    if size is not None and options.get("1", 0) > size:
        enough = [k for k, n in options.items() if n <= size]
        note += (
            f" {BENCHMARK_LABELS[benchmark]} has {size}: "
            + (f"{enough[0]} samples per question would do." if enough else "no number of samples is enough.")
        )
    # The pilot measured what samples buy: drop the generic best-case/worst-case note.
    row.notes = [n for n in row.notes if "A pilot with --samples 2 or more tells which" not in n]
    row.notes.append(note)
