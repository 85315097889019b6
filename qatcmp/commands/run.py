"""qatcmp run: ask every configured variant the same sampled questions; resumable."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shlex
import sys

from qatcmp import adaptive
from qatcmp.config import load_config
from qatcmp.errors import ConfigError, DataError, QatcmpError, describe_os_error
from qatcmp.progress import RunProgress
from qatcmp.redact import mask
from qatcmp.rundir import RunDir, finish_session
from qatcmp.runlock import RunLock, check_out_folder
from qatcmp.runner import Runner, RunSummary
from qatcmp.replicas import BlockScheduler
from qatcmp.selection import plan_benchmarks, plans_from_run

# More answers per question than any pass@k estimate needs; a larger number is a typo.
MAX_SAMPLES = 100


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="send the benchmark questions to every model variant and record the answers",
        description="Send MMLU-Pro and HumanEval questions (the same ones to every variant) and "
        "append the answers to JSONL transcripts in the run folder. Running the same command "
        "again resumes: only missing answers are requested.",
    )
    p.add_argument("--config", default="servers.yaml", help="servers and variants (default: servers.yaml)")
    p.add_argument("--out", required=True, help="run folder, e.g. runs/gemma4-quants")
    p.add_argument("--models", help="comma-separated variant names (default: all in the config)")
    add_selection_options(p)
    p.add_argument("--no-retry-errors", action="store_true", help="on resume, keep earlier error records instead of asking again")
    add_adaptive_options(p)
    p.add_argument("--plain", action="store_true", help="plain progress lines instead of the live display")
    p.set_defaults(func=handle)


def add_selection_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mmlu-pro", type=int, metavar="N", help="MMLU-Pro questions (stratified by category)")
    p.add_argument("--humaneval", type=int, metavar="N", help="HumanEval problems (at most 164)")
    p.add_argument("--seed", type=int, default=0, help="seed for the question sample and the request seeds (default 0)")
    p.add_argument("--samples", type=int, default=1, metavar="K", help="answers per question and variant (default 1)")
    p.add_argument("--mmlu-pro-data", metavar="PATH", help="local MMLU-Pro (jsonl, jsonl.gz, parquet, folder) or 'builtin'")
    p.add_argument("--humaneval-data", metavar="PATH", help="local HumanEval (jsonl, jsonl.gz, parquet, folder) or 'builtin'")


def add_adaptive_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("adaptive runs (the benchmark counts become the budget)")
    g.add_argument("--until-decided", action="store_true",
                   help="ask in blocks and stop once every pair is decided (anytime-valid tests; see README)")
    g.add_argument("--block", type=int, metavar="B", help=f"questions per block (default {adaptive.DEFAULT_BLOCK})")
    g.add_argument("--alpha", type=float, help=f"family-wise error rate (default {adaptive.DEFAULT_ALPHA})")
    g.add_argument("--margin", type=float, metavar="M",
                   help=f"equivalence margin as a proportion (default {adaptive.DEFAULT_MARGIN} = 5 points; 0: never 'equivalent')")
    g.add_argument("--reference", metavar="NAME", help="compare each variant against this one (default: every pair)")
    g.add_argument("--plan-gap", type=float, metavar="G",
                   help="the accuracy difference you plan for, as a proportion (as `qatcmp plan --delta`): the test bets on it "
                        "and decides sooner near it (default: no plan, uniform prior)")
    g.add_argument("--futility", type=float, metavar="BETA",
                   help="with --plan-gap: also stop a pair once gaps of ±G or more are rejected at level BETA "
                        "(decision 'below-plan'; it costs at most BETA of the power at the planned gap; 0.15 is a good choice; "
                        "default: no futility stop)")


def adaptive_settings(args: argparse.Namespace, run: RunDir, models: list[str]) -> adaptive.AdaptiveSettings | None:
    given = {k: getattr(args, k) for k in ("block", "alpha", "margin", "reference", "plan_gap", "futility") if getattr(args, k) is not None}
    if not args.until_decided:
        if given:
            raise ConfigError(f"--{next(iter(given)).replace('_', '-')} is an option of adaptive runs: add --until-decided")
        if (run.path / adaptive.ADAPTIVE_FILE).exists():
            # Without the flag the whole budget would be asked: hours the user did not ask for.
            raise ConfigError(f"{run.path} is an adaptive run: continue it with --until-decided "
                              f"(or delete {adaptive.ADAPTIVE_FILE} there to ask every question of the budget)")
        return None
    # Resuming: the run's own settings, unless given (and then they must match).
    base = adaptive.stored_settings(run) or adaptive.AdaptiveSettings()
    settings = base.model_copy(update=given)
    if settings.block < 1:
        raise ConfigError("--block must be at least 1")
    if not 0 < settings.alpha < 1:
        raise ConfigError("--alpha must be between 0 and 1")
    if not 0 <= settings.margin < 1:
        raise ConfigError("--margin must be at least 0 and below 1")
    if settings.plan_gap is not None and not 0 < settings.plan_gap < 1:
        raise ConfigError("--plan-gap must be above 0 and below 1 (a proportion: 0.04 = 4 points)")
    if settings.futility is not None:
        if settings.plan_gap is None:
            raise ConfigError("--futility needs --plan-gap: it stops a pair once gaps of the plan or more are rejected")
        if not 0 < settings.futility < 0.5:
            raise ConfigError("--futility must be above 0 and below 0.5 (the power it may cost at the planned gap; 0.2 is usual)")
    if len(models) < 2:
        raise ConfigError("--until-decided compares variants: give at least two")
    adaptive.family_pairs(models, settings.reference)  # an unknown --reference is refused here
    adaptive.check_settings(run, settings)
    return settings


def handle(args: argparse.Namespace) -> int:
    check_numbers(args)
    config = load_config(args.config)
    run = RunDir(args.out)
    check_out_folder(run.path)
    names = _split(args.models)
    if names is None and run.manifest.exists():
        # Resuming: the run's own variants, not every variant the config names now.
        names = list(run.read_manifest().spec.models)
    models = config.select(names)
    config.check_api_keys(models)
    if args.mmlu_pro is None and args.humaneval is None and run.manifest.exists():
        plans, seed, samples = plans_from_run(run)
    else:
        seed, samples = args.seed, args.samples
        plans = plan_benchmarks(
            {"mmlu_pro": args.mmlu_pro or 0, "humaneval": args.humaneval or 0},
            {"mmlu_pro": args.mmlu_pro_data, "humaneval": args.humaneval_data},
            seed,
        )
    settings = adaptive_settings(args, run, [m.name for m in models])
    command = ["qatcmp", *getattr(args, "argv", [])]
    progress = RunProgress(live=False if args.plain else None)
    controllers: list[adaptive.AdaptiveController] = []
    extra = {}
    if settings is not None:
        extra["scheduler_factory"] = _block_scheduler_factory(run, [m.name for m in models], settings,
                                                              not args.no_retry_errors, progress, controllers)
    runner = Runner(config, models, plans, run_dir=run.path, seed=seed, samples=samples, command=command,
                    retry_errors=not args.no_retry_errors, progress=progress, **extra)
    resume = f"qatcmp run --config {shlex.quote(args.config)} --out {shlex.quote(str(run.path))}"
    if settings is not None:
        resume += " --until-decided"
    try:
        with progress:
            summary = run_in_folder(run, runner, command)
    except KeyboardInterrupt:
        print(mask(f"\nInterrupted: {saved(runner.summary)} in {run.path}. Resume with:\n  {resume}"), file=sys.stderr)
        return 130
    print_summary(summary, resume)
    for server, why in summary.down.items():
        print(mask(f"qatcmp: error: {why}; {summary.pending_left} requests not sent. When it is back, resume with: {resume}"),
              file=sys.stderr)
    if settings is not None:
        controller = controllers[-1] if controllers else adaptive.AdaptiveController(
            run, run.read_manifest().spec, [m.name for m in models], settings, retry_errors=not args.no_retry_errors)
        controller.evaluate()  # adaptive.json from what is on disk now
        print_adaptive_summary(controller.state, run)
    return summary.exit_code


def run_in_folder(run: RunDir, runner: Runner, command: list[str]) -> RunSummary:
    """Execute the run holding the folder's lock (one run per folder), and record in the
    manifest how this session ended. Everything before this only reads the folder."""
    with RunLock(run.path, command):
        sessions_before = len(run.read_manifest().sessions) if run.manifest.exists() else 0
        try:
            summary = asyncio.run(runner.execute())
        except KeyboardInterrupt:
            _close_session(run, sessions_before, "interrupted", runner.summary)
            raise
        except QatcmpError as exc:
            _close_session(run, sessions_before, f"failed: {str(exc)[:200]}", runner.summary)
            raise
        except OSError as exc:  # a full disk, most likely: say where
            _close_session(run, sessions_before, f"failed: {describe_os_error(exc)}", runner.summary)
            raise DataError(f"{run.path}: {describe_os_error(exc)}") from None
        _close_session(run, sessions_before, "errors" if summary.errors else "complete", summary)
    return summary


def check_numbers(args: argparse.Namespace) -> None:
    if not 1 <= args.samples <= MAX_SAMPLES:
        raise ConfigError(f"--samples {args.samples}: give 1 to {MAX_SAMPLES} answers per question")
    for option in ("mmlu_pro", "humaneval"):
        value = getattr(args, option)
        if value is not None and value < 0:
            raise ConfigError(f"--{option.replace('_', '-')} must be 0 or more")


def _close_session(run: RunDir, sessions_before: int, outcome: str, summary: RunSummary) -> None:
    # Best effort: the run's own error (a full disk, say) is the one to report.
    with contextlib.suppress(QatcmpError, OSError):
        finish_session(run, sessions_before, outcome=outcome, sent=summary.sent, errors=summary.errors)


def saved(summary: RunSummary) -> str:
    """'12 answers and 3 error records saved': the two counted apart, exactly."""
    return f"{summary.answers} answers and {summary.errors} error records saved"


def _block_scheduler_factory(run, model_names, settings, retry_errors, progress, holder):
    """The runner calls this once the run folder is prepared (manifest and items written)."""

    def factory(pending, model_order, **placement):
        controller = adaptive.AdaptiveController(run, run.read_manifest().spec, model_names, settings,
                                                 retry_errors=retry_errors, log=progress.log,
                                                 on_state=progress.show_pairs)
        holder.append(controller)
        # Blocks are pulled by every replica of a variant (placement: replicas, resident models).
        return BlockScheduler(controller.next_step, model_order, **placement)

    return factory


def print_adaptive_summary(state: adaptive.AdaptiveState, run: RunDir) -> None:
    out = sys.stdout
    print(f"Adaptive decisions ({state.family}; alpha {state.settings.alpha:g}, margin ±{100 * state.settings.margin:g} points):", file=out)
    for pair in state.pairs:
        lo, hi = pair.interval
        more = f"; about {pair.more_questions} more questions might decide it" if pair.more_questions else ""
        print(f"  {pair.benchmark:<9} {pair.a} vs {pair.b}: {pair.decision} after {pair.questions_used} questions, "
              f"diff {100 * pair.diff:+.1f} pts, anytime interval [{100 * lo:+.1f}, {100 * hi:+.1f}], "
              f"anytime p {pair.p_anytime:.3g}{more}", file=out)
    status = "every pair decided" if all(p.decision != "undecided" for p in state.pairs) else (
        "budget spent" if state.finished else "not finished: run the same command again to continue")
    print(f"  {status}; details in {run.path / adaptive.ADAPTIVE_FILE}", file=out)


def print_summary(summary: RunSummary, resume: str) -> None:
    out = _Masked(sys.stdout)
    if summary.sent == 0 and not summary.down:
        print(f"Nothing to do: all {summary.skipped_done} answers are already in {summary.run_dir}.", file=out)
        return
    print(f"Run folder: {summary.run_dir}", file=out)
    for (model, benchmark), stats in sorted(summary.per_model.items()):
        print(f"  {model:<20} {benchmark:<10} {stats['done'] - stats['errors']:>5} answers  {stats['errors']:>3} error records  {stats['truncated']:>3} truncated", file=out)
    print(f"Requests sent: {summary.sent} ({saved(summary)}); retries: {summary.retries}; "
          f"already done before: {summary.skipped_done}; model switches: {summary.model_switches}", file=out)
    for warning in summary.warnings:
        print(f"WARNING: {warning}", file=out)
    if summary.errors:
        print(f"{summary.errors} requests failed after retries (error records written). Run again to retry them:\n  {resume}", file=out)
    print(f"Next: qatcmp stats {shlex.quote(str(summary.run_dir))}", file=out)


class _Masked:
    """A text stream that masks secrets in what is written to it."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text: str) -> int:
        return self._stream.write(mask(text))

    def flush(self) -> None:
        self._stream.flush()


def _split(value: str | None) -> list[str] | None:
    if not value:
        return None
    return [part.strip() for part in value.split(",") if part.strip()]
