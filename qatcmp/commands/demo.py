"""qatcmp demo: the whole pipeline on any machine, with no oMLX and no downloads.

Builds three tiny quantized models (4, 6 and 8 bits) locally, serves them from one real
mlx-lm server on loopback, and runs the same code path as a real comparison: run → score →
stats → report. The server is stopped when the demo ends, also on error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

import yaml

from qatcmp.commands.run import print_summary, run_in_folder, saved
from qatcmp.config import Config, parse_config
from qatcmp.errors import QatcmpError
from qatcmp.progress import RunProgress
from qatcmp.rundir import RunDir
from qatcmp.runner import Runner
from qatcmp.selection import plan_benchmarks

DEFAULT_MODELS_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "qatcmp" / "demo-models"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="build tiny models, serve them with mlx-lm, and run a whole comparison",
        description="Builds three tiny quantized models locally (no downloads), serves them "
        "with mlx-lm's server on 127.0.0.1, asks them MMLU-Pro and HumanEval questions with "
        "thinking on, scores the answers and writes the report. Needs qatcmp[demo].",
    )
    p.add_argument("--out", default="runs/demo", help="run folder (default runs/demo; rerunning resumes)")
    p.add_argument("--mmlu-pro", type=int, default=60, metavar="N", help="MMLU-Pro questions (default 60)")
    p.add_argument("--humaneval", type=int, default=10, metavar="N", help="HumanEval problems (default 10)")
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
        exit_code = _run(config, args, out)
    if exit_code not in (0, 1):
        return exit_code
    _score_and_report(out, say)
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


def _run(config: Config, args: argparse.Namespace, out: Path) -> int:
    plans = plan_benchmarks(
        {"mmlu_pro": args.mmlu_pro, "humaneval": args.humaneval},
        {"mmlu_pro": "builtin", "humaneval": "builtin"},
        args.seed,
    )
    progress = RunProgress(live=False if args.plain else None)
    command = ["qatcmp", *getattr(args, "argv", ["demo"])]
    runner = Runner(config, config.models, plans, run_dir=out, seed=args.seed, samples=args.samples,
                    command=command, progress=progress)
    resume = f"qatcmp demo --out {shlex.quote(str(out))}"
    try:
        with progress:
            summary = run_in_folder(RunDir(out), runner, command)  # locked, session recorded
    except KeyboardInterrupt:
        print(f"\nInterrupted: {saved(runner.summary)} in {out}. Resume with:\n  {resume}", file=sys.stderr)
        return 130
    print_summary(summary, resume)
    return summary.exit_code


def _score_and_report(out: Path, say) -> None:
    from qatcmp.report import build_report, format_summary
    from qatcmp.scoring import ensure_scores

    say("Scoring (HumanEval code runs in the sandbox)...")
    ensure_scores(out)
    report = build_report(out)
    print()
    print(format_summary(report))
    print()
    print(f"Report: {out / 'report.md'} (JSON: {out / 'report.json'}; in a browser: {out / 'report.html'}, "
          f"or `qatcmp view {out}`; plots: {out}/*.png)")


def _printer():
    def say(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    return say
