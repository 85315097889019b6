"""qatcmp demo: the whole pipeline on any machine, with no oMLX and no downloads.

Builds three tiny quantized models (4, 6 and 8 bits) locally, serves them from one real
mlx-lm server on loopback, and runs the same code path as a real comparison: an adaptive run
(`qatcmp run --until-decided`) → score → stats → report. The server is stopped when the demo
ends, also on error or Ctrl-C.

The tiny models are hand-built: each "knows" a fixed subset of the shipped MMLU-Pro questions
(qatcmp.demo.knowledge) and guesses the rest, so the demo has a real difference to find —
4bit knows far fewer than the others (a pair decided "different" after a block or two), 6bit
and 8bit are 3 points apart (undecided at the budget, with the interval it reached). The
differences are designed, not quantization effects.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

import yaml

from qatcmp import adaptive
from qatcmp.commands.run import _block_scheduler_factory, print_adaptive_summary, print_summary, run_in_folder, saved
from qatcmp.config import Config, parse_config
from qatcmp.errors import ConfigError, QatcmpError
from qatcmp.progress import RunProgress
from qatcmp.rundir import RunDir
from qatcmp.runner import Runner
from qatcmp.selection import plan_benchmarks

# The budget and block keep the demo as long as the fixed 60 + 10 question demo it replaced
# (210 requests): 4bit stops being asked once its pairs are decided (usually after the first
# block: 25 + 10 requests), 6bit and 8bit go on to the budget (2 x (75 + 10)).
DEFAULT_MMLU_PRO, DEFAULT_HUMANEVAL, DEFAULT_BLOCK = 75, 10, 25
DEFAULT_MODELS_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "qatcmp" / "demo-models"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="build tiny models, serve them with mlx-lm, and run a whole adaptive comparison",
        description="Builds three tiny quantized models locally (no downloads) that know fixed "
        "subsets of the shipped MMLU-Pro questions, serves them with mlx-lm's server on 127.0.0.1, "
        "asks them MMLU-Pro and HumanEval questions with thinking on in blocks until every pair "
        "is decided or the budget is spent (qatcmp run --until-decided), scores the answers and "
        "writes the report. Needs qatcmp[demo].",
    )
    p.add_argument("--out", default="runs/demo", help="run folder (default runs/demo; rerunning resumes)")
    p.add_argument("--mmlu-pro", type=int, default=DEFAULT_MMLU_PRO, metavar="N",
                   help=f"MMLU-Pro budget (default {DEFAULT_MMLU_PRO})")
    p.add_argument("--humaneval", type=int, default=DEFAULT_HUMANEVAL, metavar="N",
                   help=f"HumanEval budget (default {DEFAULT_HUMANEVAL})")
    p.add_argument("--block", type=int, default=DEFAULT_BLOCK, metavar="B",
                   help=f"questions per block (default {DEFAULT_BLOCK})")
    p.add_argument("--samples", type=int, default=1, metavar="K")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--models-dir", default=str(DEFAULT_MODELS_DIR), help=f"where the tiny models are built (default {DEFAULT_MODELS_DIR})")
    p.add_argument("--plain", action="store_true", help="plain progress lines")
    p.set_defaults(func=handle)


def demo_config(base_url: str, model_ids: dict[str, str]) -> str:
    """The servers.yaml a user would write for these variants."""
    data = {
        "servers": [{"name": "demo", "base_url": base_url, "max_concurrency": 4}],
        "defaults": {
            # The tiny models answer by sampling a letter: temperature 1 with a per-question
            # seed gives each question its own draw (the same draw for every variant).
            "sampling": {"temperature": 1.0, "top_p": 1.0, "top_k": 0, "min_p": 0.0, "max_tokens": 256}
        },
        "models": [{"name": name, "server": "demo", "model": model_id} for name, model_id in model_ids.items()],
    }
    return yaml.safe_dump(data, sort_keys=False)


def handle(args: argparse.Namespace) -> int:
    try:
        from qatcmp.demo.server import MlxLmServer
        from qatcmp.demo.tinymodel import build_demo_models
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise QatcmpError(f"the demo needs mlx-lm: pip install 'qatcmp[demo]' ({exc})") from None

    out = Path(args.out)
    if args.block < 1:
        raise ConfigError("--block must be at least 1")
    # Before anything is built or started: a resume under another block is refused.
    adaptive.check_settings(RunDir(out), adaptive.AdaptiveSettings(block=args.block))
    models_dir = Path(args.models_dir).expanduser()
    say = _printer()
    _skip_humaneval_without_a_sandbox(args, say)
    say(f"Building the tiny demo models in {models_dir} (cached after the first time)...")
    variants = build_demo_models(models_dir)
    say("Starting mlx-lm's server on 127.0.0.1 with the 4-, 6- and 8-bit variants...")
    with MlxLmServer(variants, workdir=models_dir / "server", log_path=models_dir / "server.log") as server:
        server.start()
        config_text = demo_config(server.base_url, server.model_ids)
        config_path = models_dir / "servers.demo.yaml"
        config_path.write_text(config_text)
        config = parse_config(config_text, str(config_path))
        say(f"Server at {server.base_url}; config written to {config_path}")
        exit_code, state = _run(config, args, out)
    if exit_code not in (0, 1) or state is None:
        return exit_code
    _score_and_report(out, say, state)
    return exit_code


def _skip_humaneval_without_a_sandbox(args: argparse.Namespace, say) -> None:
    """Model code never runs outside the sandbox, the demo's own included: where none works
    (Linux without bubblewrap), the demo compares MMLU-Pro only and says how to get HumanEval."""
    from qatcmp.sandbox import detect_protections

    protections = detect_protections()
    if args.humaneval and not protections.isolated:
        say(f"HumanEval left out: no sandbox for model code here ({protections.missing}). "
            "The demo compares MMLU-Pro only; install the sandbox and run it again with a new --out.")
        args.humaneval = 0


def _run(config: Config, args: argparse.Namespace, out: Path) -> tuple[int, adaptive.AdaptiveState | None]:
    """`qatcmp run --until-decided` on the builtin questions, with the demo's budget and block:
    the exit code and the decisions (None when interrupted)."""
    plans = plan_benchmarks(
        {"mmlu_pro": args.mmlu_pro, "humaneval": args.humaneval},
        {"mmlu_pro": "builtin", "humaneval": "builtin"},
        args.seed,
    )
    run = RunDir(out)
    names = [m.name for m in config.models]
    settings = adaptive.AdaptiveSettings(block=args.block)
    adaptive.check_settings(run, settings)  # checked in handle() too, before the build
    progress = RunProgress(live=False if args.plain else None)
    command = ["qatcmp", *getattr(args, "argv", ["demo"])]
    controllers: list[adaptive.AdaptiveController] = []
    factory = _block_scheduler_factory(run, names, settings, True, progress, controllers)
    runner = Runner(config, config.models, plans, run_dir=out, seed=args.seed, samples=args.samples,
                    command=command, progress=progress, scheduler_factory=factory)
    resume = f"qatcmp demo --out {shlex.quote(str(out))}" + (f" --block {args.block}" if args.block != DEFAULT_BLOCK else "")
    try:
        with progress:
            summary = run_in_folder(run, runner, command)  # locked, session recorded
    except KeyboardInterrupt:
        print(f"\nInterrupted: {saved(runner.summary)} in {out}. Resume with:\n  {resume}", file=sys.stderr)
        return 130, None
    print_summary(summary, resume)
    controller = controllers[-1] if controllers else adaptive.AdaptiveController(
        run, run.read_manifest().spec, names, settings)
    controller.evaluate()  # adaptive.json from what is on disk now (also when nothing was asked)
    return summary.exit_code, controller.state


def _score_and_report(out: Path, say, state: adaptive.AdaptiveState) -> None:
    from qatcmp.report import build_report, format_summary
    from qatcmp.scoring import ensure_scores

    say("Scoring (HumanEval code runs in the sandbox)...")
    ensure_scores(out)
    report = build_report(out)
    print()
    print("Fixed-sample statistics, for comparison only (not valid for a design that looked at the data while it ran):")
    print(format_summary(report))
    print()
    # Last, where a newcomer looks: the decisions that stay valid however often the run looked.
    print_adaptive_summary(state, RunDir(out))
    print(f"Report: {out / 'report.md'} (JSON: {out / 'report.json'}; in a browser: {out / 'report.html'}, "
          f"or `qatcmp view {out}`; plots: {out}/*.png)")


def _printer():
    def say(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    return say
